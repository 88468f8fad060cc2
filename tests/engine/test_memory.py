"""Resource bounds: a run holds one copy of the training set."""

import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REPO_ROOT, write_idx

_MEASURE = r"""
import io, json, sys
sys.path.insert(0, sys.argv[1])
import tensorflow as tf
from engine.run import build
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data import pipeline

def rss_mb():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS"):
        return int(line.split()[1]) / 1024

# Warm TensorFlow up (runtime, thread pools, tf.data) on a tiny run first.
config = lambda data_dir, model_dir, steps: RunConfig(
    data=DataConfig(data_dir=data_dir),
    model=ModelConfig(name="dense", latent_dim=2),
    train=TrainConfig(model_dir=model_dir, batch_size=128, train_steps=steps,
                      steps_per_loop=10, log_every=10, checkpoint_every=0,
                      figures=False))
def train(run):
  run.console.stream = io.StringIO()
  run.controller.train()

parts = build.build(config(sys.argv[3], sys.argv[4] + "/warm", 10))
train(parts)
del parts
before = rss_mb()
parts = build.build(config(sys.argv[2], sys.argv[4] + "/big", 30))
train(parts)
print(json.dumps({"growth_mb": rss_mb() - before,
                  "train_is_tensor": parts.data.train_images is None}))
"""


def test_a_run_holds_one_copy_of_the_training_set(tmp_path, mnist,
                                                   small_mnist_dir):
  big = tmp_path / "big"
  big.mkdir()
  # 282 MB: large beside the run's fixed costs (model, optimizer, tf.data
  # buffers and, with XLA, its compiled loop: tens of MB).
  images = np.concatenate([mnist.train_images[..., 0]] * 6)
  write_idx(str(big / "train-images-idx3-ubyte"), images)
  write_idx(str(big / "train-labels-idx1-ubyte"),
            np.concatenate([mnist.train_labels] * 6))
  write_idx(str(big / "t10k-images-idx3-ubyte"), mnist.test_images[:512, ..., 0])
  write_idx(str(big / "t10k-labels-idx1-ubyte"), mnist.test_labels[:512])
  dataset_mb = images.nbytes / 2 ** 20
  del images
  result = subprocess.run(
      [sys.executable, "-c", _MEASURE, REPO_ROOT, str(big), small_mnist_dir,
       str(tmp_path)], capture_output=True, text=True, check=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  measured = json.loads(result.stdout.strip().splitlines()[-1])
  assert measured["train_is_tensor"]
  # One copy plus those fixed costs; a second copy would add another
  # dataset_mb.
  assert measured["growth_mb"] < dataset_mb + 0.5 * dataset_mb, (
      measured, dataset_mb)
