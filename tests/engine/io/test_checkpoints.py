"""Checkpoint integrity: unreadable checkpoints are detected, skipped with a
warning and moved aside; a run never trains on from random weights while
claiming to resume."""

import functools
import io
import os
import shutil

from absl import logging as absl_logging
import numpy as np
import pytest

from engine.io import checkpoints
from engine.run import runner
from engine.errors import UserError
from tests import helpers

# One worker trains the module's shared runs once (see `reference` and
# `forty`).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("checkpoints")]

_config = functools.partial(helpers.run_config, **helpers.SHORT_RUN)


@pytest.fixture(scope="module")
def reference(small_mnist_dir, tmp_path_factory):
  """The weights of an uninterrupted 60-step run."""
  model_dir = tmp_path_factory.mktemp("reference")
  runner.run(_config(small_mnist_dir, model_dir, train_steps=60),
             stream=io.StringIO())
  return helpers.checkpointed_state(str(model_dir))


def _run(data_dir, model_dir, steps):
  return runner.run(_config(data_dir, model_dir, train_steps=steps),
                    stream=io.StringIO())


@pytest.fixture(scope="module")
def _forty(small_mnist_dir, tmp_path_factory):
  """A 40-step run (ckpt-20, ckpt-40), trained once for the module."""
  model_dir = tmp_path_factory.mktemp("forty")
  _run(small_mnist_dir, model_dir, 40)
  return model_dir


@pytest.fixture
def forty(_forty, tmp_path):
  """A copy of the 40-step run in the test's own directory, to damage: a
  copy is that run (checkpoints are found by their files, and a moved
  --model_dir is not a change of the run's settings)."""
  shutil.copytree(_forty, tmp_path, dirs_exist_ok=True)
  return tmp_path


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _garbage(path):
  with open(path, "wb") as f:
    f.write(os.urandom(300))


@pytest.mark.parametrize("damage", ["truncated_data", "garbage_index",
                                    "missing_data"])
def test_falls_back_to_the_previous_good_checkpoint(small_mnist_dir, tmp_path,
                                                    reference, damage,
                                                    monkeypatch, forty):
  del forty  # ckpt-20 and ckpt-40 in tmp_path.
  prefix = str(tmp_path / "ckpt-40")
  if damage == "truncated_data":
    _truncate(prefix + ".data-00000-of-00001")
  elif damage == "garbage_index":
    _garbage(prefix + ".index")
  else:
    os.remove(prefix + ".data-00000-of-00001")
  warnings = []
  monkeypatch.setattr(absl_logging, "warning",
                      lambda msg, *args: warnings.append(msg % args))
  result = _run(small_mnist_dir, tmp_path, 60)
  assert result.resumed_from == str(tmp_path / "ckpt-20")
  assert len(warnings) == 1 and "ckpt-40 is unreadable" in warnings[0]
  assert "resuming from" in warnings[0] and "corrupt" in warnings[0]
  assert sorted(os.listdir(tmp_path / "corrupt"))[0].startswith("ckpt-40.")
  # Resumed exactly: the same state as a run that was never damaged.
  state = helpers.checkpointed_state(str(tmp_path))
  assert state.keys() == reference.keys()
  for name in state:
    np.testing.assert_array_equal(state[name], reference[name], err_msg=name)


def test_no_readable_checkpoint_stops_and_leaves_the_files(small_mnist_dir,
                                                           tmp_path, forty):
  del forty  # ckpt-20 and ckpt-40 in tmp_path.
  for prefix in checkpoints.checkpoints_on_disk(str(tmp_path)):
    _truncate(prefix + ".data-00000-of-00001")
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(UserError, match="no readable checkpoint.*ckpt-40.*"
                     "ckpt-20.*Move them away"):
    _run(small_mnist_dir, tmp_path, 60)
  assert sorted(os.listdir(tmp_path)) == before


def test_a_damaged_state_file_is_rebuilt(small_mnist_dir, tmp_path,
                                         reference, forty):
  del forty  # ckpt-20 and ckpt-40 in tmp_path.
  _garbage(str(tmp_path / "checkpoint"))
  result = _run(small_mnist_dir, tmp_path, 60)
  assert result.resumed_from == str(tmp_path / "ckpt-40")
  state = helpers.checkpointed_state(str(tmp_path))
  for name in state:
    np.testing.assert_array_equal(state[name], reference[name], err_msg=name)


def test_checkpoints_on_disk_are_found_by_their_files(tmp_path):
  for name in ("ckpt-5.index", "ckpt-40.index", "ckpt-7.index",
               "ckpt-x.index", "other-3.index", "ckpt-9.data-00000-of-00001"):
    (tmp_path / name).write_bytes(b"")
  assert checkpoints.checkpoints_on_disk(str(tmp_path)) == [
      str(tmp_path / "ckpt-40"), str(tmp_path / "ckpt-7"),
      str(tmp_path / "ckpt-5")]
