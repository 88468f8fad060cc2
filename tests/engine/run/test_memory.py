"""Resource bounds: a run holds one copy of the training set, and a run
that cannot fit is refused before its data is decoded."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, write_idx

# The refusals share one measurement of TensorFlow's import
# (`import_peak_mb`), taken once on one worker.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("memory")]

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


# The whole run's memory, estimated before anything is decoded (issue 29):
# the data as --image_size/--channels make it, the model with its gradients
# and optimizer slots, and a batch's activations, together.

_IMPORTS_ONLY = ("import tensorflow, keras, models, flags\n"
                 "from engine.run import build\n")


def _measured(args, timeout=300):
  """(exit status, stderr, peak RSS in MB, seconds) of a child process; its
  data segment is capped (RLIMIT_DATA), so a regression that decodes the
  dataset fails here instead of taking the machine's memory."""
  import resource
  import tempfile
  import threading
  import time

  cap = 8 << 30

  def limit():
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))

  with tempfile.TemporaryFile("w+") as err:
    started = time.perf_counter()
    child = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO_ROOT,
        preexec_fn=limit, env=dict(os.environ, PYTHONPATH=REPO_ROOT,
                                   TF_CPP_MIN_LOG_LEVEL="2"))
    killer = threading.Timer(timeout, child.kill)
    killer.start()
    try:
      _, status, usage = os.wait4(child.pid, 0)
    finally:
      killer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    return (child.returncode, err.read(), usage.ru_maxrss / 1024,
            time.perf_counter() - started)


def _side_for(factor, images, channels=3):
  """An image side at which `images` images take `factor` times the memory
  this process may use (what the engine reads: MemAvailable or the cgroup
  limit), so the case holds on a 24 GiB machine and on a 128 GiB one."""
  from engine.data import memory
  return int(np.ceil(np.sqrt(
      factor * memory.available_memory_bytes() / (images * channels))))


def _write_source(kind, directory):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (220, 8, 8), np.uint8)
  if kind == "npz":
    path = directory / "data.npz"
    np.savez(path, x_train=images[:200], x_test=images[200:])
    return str(path)
  if kind == "idx":
    write_idx(str(directory / "train-images-idx3-ubyte"), images[:200])
    write_idx(str(directory / "train-labels-idx1-ubyte"), np.zeros(200))
    write_idx(str(directory / "t10k-images-idx3-ubyte"), images[200:])
    write_idx(str(directory / "t10k-labels-idx1-ubyte"), np.zeros(20))
    return str(directory)
  import tensorflow as tf
  for i, image in enumerate(images):  # 200 train, 20 held out.
    (directory / f"{i:03d}.png").write_bytes(
        tf.io.encode_png(image[..., None]).numpy())
  return str(directory)


@pytest.fixture(scope="module")
def import_peak_mb():
  """The peak RSS in MB of a process that only imports what a run does:
  the same for every refusal, so measured once."""
  status, stderr, peak_mb, _ = _measured([sys.executable, "-c",
                                          _IMPORTS_ONLY])
  assert status == 0, stderr
  return peak_mb


@pytest.mark.parametrize("kind", ["npz", "idx", "folder"])
def test_a_run_over_memory_is_refused_before_its_data_is_decoded(
    tmp_path, kind, import_peak_mb):
  """220 8x8 images resized to a side at which they alone take 4x the
  memory this process may use: one line with every part's size and the
  flags that shrink it, exit 2, and the refused process never grew past
  TensorFlow's import by more than a fraction of a GiB."""
  source = _write_source(kind, tmp_path)
  side = _side_for(4, 220)
  status, stderr, peak_mb, seconds = _measured([
      sys.executable, "-m", "engine.main", f"--data_dir={source}",
      "--model=dense", f"--model_dir={tmp_path}/m", "--nofigures",
      f"--image_size={side},{side}", "--channels=3", "--batch_size=32"])
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert status == 2 and len(lines) == 1 and "Traceback" not in stderr, (
      stderr[-3000:])
  line = lines[0]
  for fragment in (f"{side}x{side}x3", "the data", "220 examples",
                   "the model", "parameters", "Adam's 2 slots",
                   "activations of a batch of 32", "--image_size",
                   "--max_train_examples", "--batch_size", "--model",
                   "converted to shards", "this process may use"):
    assert fragment in line, line
  base_mb = import_peak_mb
  print(f"\nMEMORY | {kind} at {side}x{side}x3 | exit {status}, peak "
        f"{peak_mb:.0f} MB (import {base_mb:.0f} MB), {seconds:.1f} s | "
        f"{line}")
  assert peak_mb < base_mb + 1024, (peak_mb, base_mb)
  assert not os.path.exists(tmp_path / "m" / "checkpoint")


def test_the_estimate_counts_a_moving_average_and_names_the_largest_part():
  from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
  from engine.errors import UserError
  from engine.run import memory
  import tensorflow as tf
  footprint = memory.Footprint(parameters=1 << 28, activations_per_example=10)
  strategy = tf.distribute.get_strategy()

  def refusal(ema_decay, data_bytes, available):
    config = RunConfig(data=DataConfig(data_dir=os.getcwd()),
                       model=ModelConfig(name="dense"),
                       train=TrainConfig(batch_size=4, ema_decay=ema_decay))
    try:
      memory.check(config, footprint, strategy, image_shape=(8, 8, 1),
                   data_bytes=data_bytes, examples=10, data_in_memory=True,
                   available=available)
    except UserError as e:
      return str(e)
    return None

  # 1 GiB of weights: x4 (weights, gradients, Adam's two slots) = 4 GiB;
  # a moving average is a fifth copy.
  assert refusal(0.0, 0, 5 << 30) is None
  line = refusal(0.999, 0, 5 << 30)
  assert line.startswith("--model=dense: ") and "5.0 GiB" in line, line
  assert "their gradients, Adam's 2 slots and a moving average" in line
  line = refusal(0.0, 40 << 30, 45 << 30)
  assert line.startswith(f"--data_dir={os.getcwd()}: ") and (
      "the data 40.0 GiB" in line), line
