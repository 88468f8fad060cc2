"""Shared fixtures: real MNIST from ../shared/data, and small IDX copies of it."""

import gzip
import os
import struct
import sys

import hypothesis
import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.environ.get(
    "VAE_ENGINE_MNIST_DIR",
    os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "mnist"))

if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# Randomized tests are reproducible by default (CI, `make test`): the same
# examples on every run and machine, and every case ever found is pinned with
# @hypothesis.example next to its test. HYPOTHESIS_PROFILE=explore searches
# afresh with ten times the examples, to find new cases worth pinning.
hypothesis.settings.register_profile("reproducible", derandomize=True,
                                     max_examples=300,
                                     database=None, print_blob=True)
hypothesis.settings.register_profile("explore", derandomize=False,
                                     max_examples=3000, print_blob=True)
hypothesis.settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "reproducible"))


def write_idx(path, array, magic=None):
  """Writes a uint8 array as an IDX file (gzip if the name ends in .gz)."""
  array = np.asarray(array, dtype=np.uint8)
  if magic is None:
    magic = 0x00000800 | array.ndim
  header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I",
                                                   *array.shape)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + array.tobytes())
  return path


@pytest.fixture(scope="session")
def mnist_dir():
  if not os.path.isdir(MNIST_DIR):
    pytest.fail(f"real MNIST not found at {MNIST_DIR} (set "
                "VAE_ENGINE_MNIST_DIR)")
  return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
  from engine.data import sources
  return sources.load_idx_dir(mnist_dir)


@pytest.fixture(scope="session")
def small_mnist_dir(tmp_path_factory, mnist):
  """The first 2,048 training and 512 test images of real MNIST, as IDX .gz."""
  directory = str(tmp_path_factory.mktemp("small_mnist"))
  write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"),
            mnist.train_images[:2048, ..., 0])
  write_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"),
            mnist.train_labels[:2048])
  write_idx(os.path.join(directory, "t10k-images-idx3-ubyte.gz"),
            mnist.test_images[:512, ..., 0])
  write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"),
            mnist.test_labels[:512])
  return directory


@pytest.fixture
def data_copy(tmp_path, small_mnist_dir):
  """A writable copy of the small MNIST directory, for damaging."""
  directory = tmp_path / "data"
  directory.mkdir()
  for name in os.listdir(small_mnist_dir):
    (directory / name).write_bytes(
        open(os.path.join(small_mnist_dir, name), "rb").read())
  return directory


def pytest_addoption(parser):
  parser.addoption(
      "--chaos-kills", type=int, default=4,
      help="SIGKILLs in the kill-loop test (4 in CI; 12 or more for the "
      "full run, or use tools/chaos.py directly)")
