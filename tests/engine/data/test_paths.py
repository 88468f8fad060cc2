"""A FIFO or a device where a dataset is expected (issue 29): refused by its
type before it is opened, in one line, exit 2, never a hang. Every case runs
under a deadline, so a read that blocks fails the test instead of hanging
the suite."""

import contextlib
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from engine.config import DataConfig
from engine.data import sources
from engine.errors import DataError
from tests.helpers import REPO_ROOT
from tests.helpers import assert_one_line_error

_DEADLINE_S = 20


@contextlib.contextmanager
def _deadline(seconds=_DEADLINE_S):
  """Fails, instead of hanging, if the block takes longer (SIGALRM ends a
  blocked open of a FIFO)."""
  def expired(*_):
    raise TimeoutError(f"still blocked after {seconds} s (a FIFO opened?)")
  previous = signal.signal(signal.SIGALRM, expired)
  signal.alarm(seconds)
  try:
    yield
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _special(tmp_path, kind, name):
  path = tmp_path / name
  if kind == "fifo":
    os.mkfifo(path)
  else:
    os.symlink("/dev/zero", path)
  return path


_WHAT = {"fifo": "a FIFO (named pipe)",
         "devzero": "a character device, via a link to /dev/zero"}


@pytest.mark.e2e
@pytest.mark.parametrize("tool", ["engine.main", "convert_dataset"])
@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_a_special_file_named_npz_as_data_dir(tmp_path, kind, tool):
  path = _special(tmp_path, kind, "data.npz")
  command = ([sys.executable, "-m", "engine.main", "--model=dense",
              f"--model_dir={tmp_path}/m"] if tool == "engine.main" else
             [sys.executable, os.path.join(REPO_ROOT, "tools",
                                           "convert_dataset.py"),
              f"--output_dir={tmp_path}/out"])
  result = subprocess.run(
      [*command, f"--data_dir={path}"], capture_output=True, text=True,
      cwd=REPO_ROOT, timeout=120, check=False,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT))
  line = assert_one_line_error(result, f"--data_dir={path}: {_WHAT[kind]}",
                               "not a file or a directory")
  assert result.returncode == 2
  assert "NotADirectoryError" not in result.stderr
  assert not os.path.exists(tmp_path / "out")
  print(f"\nSPECIAL | {tool} --data_dir={kind} | exit 2 | {line}")


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_sources_refuse_a_special_file_unopened(tmp_path, kind):
  path = _special(tmp_path, kind, "data.npz")
  with _deadline(), pytest.raises(DataError, match=re.escape(_WHAT[kind])):
    sources.load(DataConfig(data_dir=str(path)))


@pytest.mark.parametrize("kind", ["fifo", "devzero"])
def test_a_special_file_among_a_folders_images(tmp_path, kind):
  import tensorflow as tf
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(10):
    (folder / f"{i:03d}.png").write_bytes(
        tf.io.encode_png(tf.zeros([4, 4, 1], tf.uint8)).numpy())
  _special(folder, kind, "005b.png")
  with _deadline(), pytest.raises(DataError, match=re.escape(
      f"005b.png: {_WHAT[kind]}")):
    sources.load(DataConfig(data_dir=str(folder), test_fraction=0.2))


@pytest.mark.parametrize("name", ["y_train.npy", "y_test.npy"])
def test_a_fifo_as_an_npy_label_file(tmp_path, name):
  from engine.cli import convert_dataset
  np.save(tmp_path / "x_train.npy", np.zeros((4, 2, 2), np.uint8))
  np.save(tmp_path / "x_test.npy", np.zeros((2, 2, 2), np.uint8))
  _special(tmp_path, "fifo", name)
  config = DataConfig(data_dir=str(tmp_path))
  with _deadline(), pytest.raises(DataError, match=f"{name}: a FIFO"):
    convert_dataset._sources(config)  # pylint: disable=protected-access
