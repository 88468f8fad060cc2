"""Colour images end to end: photo patches through training, figures, export."""

import json
import os
import subprocess
import sys

import matplotlib.cbook
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

import models
from engine.io import summaries
from tests.helpers import REPO_ROOT, photo_patches
from tests.helpers import run_tool_in_process
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e


def test_conv_takes_any_size_divisible_by_4_and_any_channels():
  vae = models.get("conv").build((32, 32, 3), 2)
  assert vae.image_shape == (32, 32, 3)
  assert vae.decoder(tf.zeros([2, 2])).shape == (2, 32, 32, 3)
  assert vae.count_params() == (
      # Conv 3->32, 32->64, Dense 8*8*64->16, heads; Dense 2->8*8*64,
      # ConvT 64->64, 64->32, 32->3.
      (3 * 9 * 32 + 32) + (32 * 9 * 64 + 64) + (4096 * 16 + 16) + 2 * 34,
      (2 * 4096 + 4096) + (64 * 9 * 64 + 64) + (64 * 9 * 32 + 32)
      + (32 * 9 * 3 + 3))


_LOAD_EXPORT = r"""
import sys, json
import numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images = loaded.signatures["decode"](z=tf.zeros([4, 2]))["images"].numpy()
decoded = loaded.signatures["decode"](z=tf.zeros([4, 2]))
print(json.dumps({"shape": list(images.shape),
                  "in_unit_range": bool((images >= 0).all() and (images <= 1).all()),
                  "log_scale": list(decoded["log_scale"].shape)}))
"""


def test_photo_patches_train_and_give_colour_figures_and_an_export(tmp_path):
  data_dir = tmp_path / "patches"
  data_dir.mkdir()
  assert photo_patches(str(data_dir)) > 200
  model_dir = tmp_path / "run"
  result = run_cli("--model=conv", f"--data_dir={data_dir}", "--batch_size=32",
                   "--train_steps=150", "--steps_per_loop=25", "--log_every=25",
                   "--reconstruction_loss=discretized_logistic",
                   "--eval_nll_samples=10", "--learning_rate=3e-3",
                   f"--model_dir={model_dir}", f"--export_dir={tmp_path}/e")
  assert result.returncode == 0, result.stderr
  evaluation = summaries.read_metrics(str(model_dir))["eval"][150]
  # Better than a uniform over 256 levels (8 bits), far from perfect.
  assert 2.0 < evaluation["elbo_bits_per_dim"] < 8.0, evaluation
  assert 2.0 < evaluation["bits_per_dim"] <= evaluation["elbo_bits_per_dim"]
  assert f"{evaluation['elbo_bits_per_dim']:.4f} bits/dim" in result.stdout
  train = summaries.read_metrics(str(model_dir))["train"]
  assert train[150]["loss"] < train[25]["loss"]  # It learns.
  reconstructions = matplotlib.image.imread(
      str(model_dir / "figures" / "reconstructions.png"))[..., :3]
  # Unlabelled images (no class folders): no scatter coloured by label.
  assert not (model_dir / "figures" / "latent_scatter.png").exists()
  assert (model_dir / "figures" / "latent_manifold.png").exists()
  # Colour: the channels differ somewhere (a grey figure has R == G == B).
  assert np.abs(reconstructions[..., 0] - reconstructions[..., 2]).max() > 0.1
  export = os.path.join(tmp_path, "e", "150")
  loaded = subprocess.run([sys.executable, "-c", _LOAD_EXPORT, export],
                          capture_output=True, text=True, timeout=300,
                          cwd=str(tmp_path))
  assert loaded.returncode == 0, loaded.stderr[-2000:]
  report = json.loads(loaded.stdout.strip().splitlines()[-1])
  assert report == {"shape": [4, 32, 32, 3], "in_unit_range": True,
                    "log_scale": [4, 32, 32, 3]}
  # The importance-weighted NLL from the export alone (the learned scale
  # travels in its decode signature) agrees with the checkpoint's.
  nll = {}
  for source in (f"--model_dir={model_dir}", f"--saved_model={export}"):
    evaluated = run_tool_in_process(
        "evaluate", source, f"--data_dir={data_dir}", "--eval_nll_samples=20",
        "--batch_size=32", "--reconstruction_loss=discretized_logistic",
        f"--output_json={tmp_path}/eval.json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    nll[source[:5]] = json.loads((tmp_path / "eval.json").read_text())["nll"]
  assert abs(nll["--mod"] - nll["--sav"]) < 1e-2, nll


_CIFAR10_MOCK = r"""
import io, json, sys
import tensorflow as tf
import tensorflow_datasets as tfds
from engine.run import runner
from engine.config import *
from tests.helpers import photo_patches

# mock_data fakes the prepared files' contents but not is_prepared().
tfds.core.DatasetBuilder.is_prepared = lambda self: True
report = {}
with tfds.testing.mock_data(num_examples=96):
  for strategy in ("mirrored", "default"):
    config = RunConfig(
        data=DataConfig(dataset="cifar10"),
        model=ModelConfig(name="conv", latent_dim=2),
        train=TrainConfig(model_dir=f"{sys.argv[1]}/{strategy}", batch_size=32,
                          train_steps=4, steps_per_loop=2, log_every=2,
                          checkpoint_every=0, figures=False),
        distribution=DistributionConfig(strategy=strategy, cpu_devices=2))
    stream = io.StringIO()
    result = runner.run(config, stream)
    report[strategy] = {"elbo": result.test_metrics["elbo"],
                        "first_line": stream.getvalue().splitlines()[0]}
print(json.dumps(report))
"""


def test_tfds_cifar10_trains_on_one_device_and_mirrored(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  result = subprocess.run([sys.executable, "-c", _CIFAR10_MOCK, str(tmp_path)],
                          capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert "tensorflow-datasets:cifar10" in report["default"]["first_line"]
  assert "2 replica(s)" in report["mirrored"]["first_line"]
  assert np.isfinite(report["default"]["elbo"])
  assert abs(report["mirrored"]["elbo"] - report["default"]["elbo"]) < 1e-2
