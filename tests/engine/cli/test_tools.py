"""tools/export.py, tools/plot.py and tools/sample.py as a user runs them,
and an export killed part-way. Each tool runs once as a process; its other
answers come from the test's process (`run_tool_in_process`)."""

import io
import os

import matplotlib.image
import numpy as np
import pytest

import models
from engine.serving import export
from engine.run import runner
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tests.helpers import run_tool
from tests.helpers import run_tool_in_process

pytestmark = pytest.mark.e2e


# The tests that read `trained_run` share one worker, which trains it once.
_SHARES_THE_RUN = pytest.mark.xdist_group("tools_trained_run")


@pytest.fixture(scope="module")
def trained_run(small_mnist_dir, tmp_path_factory):
  """A short denoising run with checkpoints, made only for the tools to read:
  not compiled with XLA, which is nothing the tools see."""
  model_dir = tmp_path_factory.mktemp("run")
  config = RunConfig(
      data=DataConfig(data_dir=small_mnist_dir, noise_factor=0.2),
      model=ModelConfig(name="denoising", latent_dim=40),
      train=TrainConfig(model_dir=str(model_dir), batch_size=64,
                        train_steps=30, checkpoint_every=10, log_every=10,
                        jit_compile=False, figures=False))
  runner.run(config, stream=io.StringIO())
  return model_dir


@_SHARES_THE_RUN
def test_export_tool_from_an_older_checkpoint(trained_run, tmp_path):
  result = run_tool("export.py", f"--model_dir={trained_run}",
                    f"--checkpoint={trained_run}/ckpt-20",
                    f"--export_dir={tmp_path}")
  assert result.returncode == 0, result.stderr
  assert os.listdir(tmp_path) == ["20"]
  import tensorflow as tf
  loaded = tf.saved_model.load(str(tmp_path / "20"))
  assert "denoise" in loaded.signatures


def test_export_tool_bad_model_dir(tmp_path):
  result = run_tool_in_process("export", f"--model_dir={tmp_path}")
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "no config.json" in result.stderr


@_SHARES_THE_RUN
def test_plot_tool_from_checkpoint_and_from_export(trained_run, tmp_path,
                                                   small_mnist_dir):
  from_checkpoint = run_tool_in_process("plot", f"--model_dir={trained_run}",
                                        f"--output_dir={tmp_path}/a")
  assert from_checkpoint.returncode == 0, from_checkpoint.stderr
  assert {"denoising.png", "loss_curves.png", "latent_manifold.png"} <= set(
      os.listdir(tmp_path / "a"))
  exported = export.export(
      models.get("dense").build((28, 28, 1), 2), str(tmp_path / "e"), 1)
  from_export = run_tool("plot.py", f"--saved_model={exported}",
                         f"--data_dir={small_mnist_dir}",
                         f"--output_dir={tmp_path}/b")
  assert from_export.returncode == 0, from_export.stderr
  written = sorted(os.listdir(tmp_path / "b"))
  assert written == ["interpolations.png", "latent_manifold.png",
                     "latent_scatter.png", "reconstructions.png",
                     "samples.png"]
  for name in written:
    assert matplotlib.image.imread(str(tmp_path / "b" / name)).var() > 1e-3


def test_sample_tool_writes_png_and_npy(tmp_path):
  exported = export.export(models.get("conv").build((28, 28, 1), 2),
                           str(tmp_path / "e"), 5)
  result = run_tool("sample.py", f"--saved_model={exported}", "--num=12",
                    f"--output={tmp_path}/s")
  assert result.returncode == 0, result.stderr
  samples = np.load(tmp_path / "s.npy")
  assert samples.shape == (12, 28, 28, 1) and samples.dtype == np.float32
  assert 0 <= samples.min() and samples.max() <= 1
  assert matplotlib.image.imread(str(tmp_path / "s.png")).shape[0] > 100


def test_sample_tool_takes_a_label_for_a_conditional_export(tmp_path):
  vae = models.get("dense").create((28, 28, 1), 2, num_classes=10)
  exported = export.export(vae, str(tmp_path / "e"), version=1)
  result = run_tool_in_process("sample", f"--saved_model={exported}",
                               "--num=6", "--label=7",
                               f"--output={tmp_path}/sevens")
  assert result.returncode == 0, result.stderr
  assert np.load(tmp_path / "sevens.npy").shape == (6, 28, 28, 1)
  for flags, message in (
      ([], "is a conditional model's export; pass --label=CLASS"),
      (["--label=10"], "--label=10: not a class of the model (10 classes)")):
    result = run_tool_in_process("sample", f"--saved_model={exported}",
                                 *flags, f"--output={tmp_path}/bad")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --label: {exported} {message}" if not flags
        else f"error: {message}")
  plain = export.export(models.get("dense").create((28, 28, 1), 2),
                        str(tmp_path / "p"), version=1)
  result = run_tool_in_process("sample", f"--saved_model={plain}",
                               "--label=3")
  assert result.returncode != 0
  assert f"--label=3: {plain} is not conditional" in result.stderr


def test_sample_tool_bad_path(tmp_path):
  result = run_tool_in_process("sample", f"--saved_model={tmp_path}/none")
  assert result.returncode == 2 and "--saved_model" in result.stderr
  assert "Traceback" not in result.stderr
