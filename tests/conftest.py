"""Shared fixtures (real MNIST from ../shared/data, and small IDX copies of
it) and the test tiers.

Tiers: `unit` tests run in this process and never train a whole run (`make
test-unit`, after each edit); `e2e` tests start processes or run the engine
end to end; `slow` ones are the longest of those. A test is `unit` unless
marked `e2e` or `slow`, and the unit tier keeps its promise: a unit test,
or a fixture it needs, that starts a process or a whole run fails.
"""

import contextlib
import os
import subprocess
import sys

import hypothesis
import pytest

# The test workers (`make test`: two) share the machine's cores, and so does
# every process a test starts: one intra-op thread per TensorFlow process
# keeps their thread pools from spinning against each other. Set before this
# process imports TensorFlow, and inherited by what it starts. Exact resume
# and chaos do not rest on it: test_chaos runs its jobs with TensorFlow's own
# thread count (`default_threads`).
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")

from tests.helpers import MNIST_DIR, REPO_ROOT, write_idx  # noqa: E402

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


@pytest.fixture(scope="session")
def mnist_classifier_dir(tmp_path_factory, mnist):
  """A directory holding the sample-quality classifier's cache
  (`<dir>/classifier`), trained once per worker on 16,000 MNIST images for 2
  epochs (0.956 test accuracy on an AMD EPYC Zen 3; 0.98 from all 60,000,
  in 4x the time). Copy its `classifier` into a run
  directory to spare the run its training."""
  from engine.eval import sample_quality
  directory = str(tmp_path_factory.mktemp("mnist_classifier"))
  sample_quality.load_or_train(
      directory, mnist.train_images[:16000], mnist.train_labels[:16000],
      mnist.test_images[:2000], mnist.test_labels[:2000], epochs=2)
  return directory


@pytest.fixture
def default_threads(monkeypatch):
  """The processes the test starts use TensorFlow's own intra-op thread
  count, as a user's runs do (see `TF_NUM_INTRAOP_THREADS` above)."""
  monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)


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
      "--chaos-kills", type=int, default=3,
      help="SIGKILLs in the kill-loop test (3 in CI: one while steps run, one "
      "mid-checkpoint, one mid-export; 12 or more for the full run, or use "
      "tools/chaos.py directly)")


def pytest_collection_modifyitems(config, items):
  del config  # Unused.
  for item in items:
    if item.get_closest_marker("slow"):
      item.add_marker(pytest.mark.e2e)
    if not item.get_closest_marker("e2e"):
      item.add_marker(pytest.mark.unit)


@contextlib.contextmanager
def _in_process_only(item):
  """Inside a unit test (and the fixtures it sets up), starting a process or
  a whole run fails the test, naming the tier to move it to."""
  if item.get_closest_marker("unit") is None:
    yield
    return
  from engine.run import runner  # pylint: disable=g-import-not-at-top

  def refuse(what):
    def refused(*args, **kwargs):
      del args, kwargs
      pytest.fail(f"{item.nodeid} is in the unit tier but {what}: mark it "
                  "(or its module) `pytest.mark.e2e`", pytrace=False)
    return refused

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(subprocess.Popen, "__init__", refuse("starts a process"))
    patch.setattr(runner, "run", refuse("trains a whole run (runner.run)"))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
  with _in_process_only(item):
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
  with _in_process_only(item):
    yield
