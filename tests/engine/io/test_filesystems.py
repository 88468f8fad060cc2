"""Any TensorFlow filesystem: a whole run on `ram://` (in memory)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.e2e

_RUN_ON_RAM = r"""
import io, json, os, sys
import tensorflow as tf
from engine.run import runner
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig

gfile = tf.io.gfile
def config(steps):
  return RunConfig(
      data=DataConfig(data_dir=sys.argv[1], noise_factor=0.2),
      model=ModelConfig(name="denoising", latent_dim=4),
      train=TrainConfig(model_dir="ram://runs/a", export_dir="ram://exports/a",
                        batch_size=64, train_steps=steps, steps_per_loop=5,
                        log_every=5, eval_every=10, checkpoint_every=10,
                        # The files are what is tested, not how steps are
                        # compiled.
                        jit_compile=False))
first = runner.run(config(20), io.StringIO())
second = runner.run(config(30), io.StringIO())
loaded = tf.saved_model.load(second.export_path)
samples = loaded.signatures["sample"](num=tf.constant(3))["images"].numpy()
report = {
    "model_dir": sorted(gfile.listdir("ram://runs/a")),
    "figures": sorted(gfile.listdir("ram://runs/a/figures")),
    "exports": sorted(gfile.listdir("ram://exports/a")),
    "resumed_from": second.resumed_from,
    "result": json.loads(gfile.GFile("ram://runs/a/result.json").read()),
    "config": json.loads(gfile.GFile("ram://runs/a/config.json").read()),
    "metrics_lines": len(gfile.GFile("ram://runs/a/metrics.jsonl").read()
                         .splitlines()),
    "png_bytes": [len(gfile.GFile("ram://runs/a/figures/" + name, "rb").read())
                  for name in gfile.listdir("ram://runs/a/figures")],
    "samples_shape": list(samples.shape),
    "local_leftovers": [p for p in ("ram:", "ram") if os.path.exists(p)],
}
print(json.dumps(report))
"""


def test_a_whole_run_with_its_export_and_figures_on_ram(small_mnist_dir,
                                                        tmp_path):
  result = subprocess.run([sys.executable, "-c", _RUN_ON_RAM, small_mnist_dir],
                          capture_output=True, text=True, cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  names = set(report["model_dir"])
  assert {"config.json", "flags.txt", "metrics.jsonl", "result.json",
          "checkpoint", "ckpt-30.index", "figures", "train",
          "eval"} <= names, names
  assert not any(".tmp" in name for name in names)
  assert set(report["figures"]) == {
      "reconstructions.png", "samples.png", "latent_manifold.png",
      "latent_scatter.png", "denoising.png", "loss_curves.png",
      "traversals.png", "interpolations.png"}
  assert all(size > 1000 for size in report["png_bytes"])
  assert report["exports"] == ["20", "30"]
  assert report["resumed_from"] == "ram://runs/a/ckpt-20"
  assert report["result"]["final_step"] == 30
  assert report["result"]["export_path"] == "ram://exports/a/30"
  assert report["config"]["train"]["model_dir"] == "ram://runs/a"
  # Progress every 5 steps and evaluations at 10, 20 and 30, over two runs.
  assert report["metrics_lines"] == 6 + 3
  assert report["samples_shape"] == [3, 28, 28, 1]
  assert report["local_leftovers"] == []  # Nothing landed on local disk.
