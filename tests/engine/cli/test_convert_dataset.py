"""convert_dataset applies the loaders' label rules to every source (issue
29): labels the `.npz` loader refuses are refused from `.npy` arrays too,
in one line, exit 2, with nothing left in --output_dir. `convert_in_process`
(tests/engine/cli/conversion.py) runs the tool's main in this process."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from engine.config import DataConfig
from engine.data import sources
from engine.errors import DataError
from tests.helpers import REPO_ROOT
from tests.engine.cli.conversion import convert_in_process, error_line


def _arrays(directory, y_train, y_test=None, count=4):
  directory.mkdir(exist_ok=True)
  np.save(directory / "x_train.npy", np.zeros((count, 3, 3), np.uint8))
  np.save(directory / "x_test.npy", np.zeros((2, 3, 3), np.uint8))
  if y_train is not None:
    np.save(directory / "y_train.npy", y_train)
  if y_test is not None:
    np.save(directory / "y_test.npy", y_test)
  return directory


def _nothing_written(tmp_path):
  assert not os.path.exists(tmp_path / "out")
  assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]


@pytest.mark.e2e
def test_uint64_labels_near_2_to_the_64_are_refused(tmp_path):
  """The case reported: stored as -1 and INT64_MIN, exit 0, before."""
  arrays = _arrays(tmp_path / "arrays",
                   np.array([0, 1, 2**64 - 1, 2**63], np.uint64))
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "tools", "convert_dataset.py"),
       f"--data_dir={arrays}", f"--output_dir={tmp_path}/out"],
      capture_output=True, text=True, timeout=300, check=False)
  line = error_line(result.returncode, result.stderr)
  assert line == (f"error: {arrays}/y_train.npy holds the label "
                  "18446744073709551615; labels are class indices 0, 1, ... "
                  "(below 2**31)")
  _nothing_written(tmp_path)
  print(f"\nCONVERT | uint64 labels | exit 2 | {line}")


@pytest.mark.parametrize("case,y_train,fragment", [
    ("uint64 2**63", np.array([0, 1, 2, 2**63], np.uint64),
     "holds the label 9223372036854775808"),
    ("-1", np.array([0, -1, 1, 1]), "holds the label -1"),
    ("INT64_MIN", np.array([0, -2**63, 1, 1]),
     "holds the label -9223372036854775808"),
    ("2**31", np.array([0, 2**31, 1, 1], np.int64),
     "holds the label 2147483648"),
    ("float", np.array([0.0, 1.0, 1.0, 0.0]), "is float64; labels must be"),
    ("bool", np.array([True, False, True, False]), "is bool; labels must be"),
    ("strings", np.array(["a", "b", "a", "b"]), "is <U1; labels must be"),
    ("three labels", np.array([0, 1, 1]), "holds 3 labels for the 4 images"),
    ("[N, 2]", np.zeros((4, 2), np.int64), "has shape (4, 2)"),
])
def test_labels_the_loader_refuses_are_refused(tmp_path, case, y_train,
                                               fragment):
  arrays = _arrays(tmp_path / "arrays", y_train)
  line = error_line(*convert_in_process(
      f"--data_dir={arrays}", f"--output_dir={tmp_path}/out")[::2])
  assert f"{arrays}/y_train.npy" in line and fragment in line, line
  _nothing_written(tmp_path)
  # The .npz loader refuses the same labels, with the same words.
  npz = tmp_path / "same.npz"
  np.savez(npz, x_train=np.zeros((4, 3, 3), np.uint8),
           x_test=np.zeros((2, 3, 3), np.uint8), y_train=y_train)
  with pytest.raises(DataError, match=re.escape(fragment)):
    sources.load(DataConfig(data_dir=str(npz)))


def test_object_labels_are_refused_without_unpickling(tmp_path):
  arrays = _arrays(tmp_path / "arrays", np.array([0, 1, 2, {}], object))
  line = error_line(*convert_in_process(
      f"--data_dir={arrays}", f"--output_dir={tmp_path}/out")[::2])
  assert "is object; labels must be integers" in line, line
  _nothing_written(tmp_path)


def test_labels_the_loader_takes_are_taken(tmp_path):
  """[N, 1] labels, and any integer dtype holding class indices."""
  arrays = _arrays(tmp_path / "arrays",
                   np.array([[3], [0], [1], [2]], np.uint64),
                   np.array([1, 0], np.int8))
  status, _, stderr = convert_in_process(f"--data_dir={arrays}",
                                         f"--output_dir={tmp_path}/out")
  assert status == 0, stderr
  converted = sources.load(DataConfig(data_dir=str(tmp_path / "out")))
  np.testing.assert_array_equal(converted.train_labels, [3, 0, 1, 2])
  np.testing.assert_array_equal(converted.test_labels, [1, 0])
