"""A run directory read by a tool (engine.io.run_dir): the latest checkpoint,
even while the run trains and deletes old ones."""

import keras
import pytest
import tensorflow as tf

import models
from engine.errors import UserError
from engine.io import checkpoints
from engine.io import run_dir
from models.architecture import Architecture
from tests import helpers


def _run_with_checkpoints(model_dir, steps, max_to_keep):
  """A run directory as training leaves it: its config and, of `steps`
  saved checkpoints, the last `max_to_keep`. Returns every path saved."""
  run_dir.write_config(str(model_dir), helpers.run_config(None, model_dir))
  vae = models.get("dense").build((28, 28, 1), 2)
  step = tf.Variable(0, dtype=tf.int64)
  checkpointer = checkpoints.Checkpointer(
      str(model_dir), encoder=vae.encoder, decoder=vae.decoder,
      optimizer=keras.optimizers.Adam(), global_step=step,
      architecture=Architecture("dense", 2, (28, 28, 1)),
      max_to_keep=max_to_keep)
  saved = []
  for number in steps:
    step.assign(number)
    saved.append(checkpointer.save(number))
  return saved


def _latest_checkpoint_answers(monkeypatch, *stale):
  """`tf.train.latest_checkpoint` answers the `stale` paths first, as it
  does when the run deletes each before the tool reads it; then the truth."""
  answers = list(stale)
  truth = tf.train.latest_checkpoint

  def latest(directory):
    return answers.pop(0) if answers else truth(directory)
  monkeypatch.setattr(tf.train, "latest_checkpoint", latest)


def test_a_checkpoint_deleted_before_it_is_read_gives_way_to_the_new_latest(
    tmp_path, monkeypatch):
  first, _, third = _run_with_checkpoints(tmp_path, [10, 20, 30],
                                          max_to_keep=1)
  assert not tf.io.gfile.exists(f"{first}.index")  # Deleted by the run.
  _latest_checkpoint_answers(monkeypatch, first, first)
  trained = run_dir.load_trained_model(str(tmp_path))
  assert (trained.step, trained.checkpoint) == (30, third)


def test_a_run_that_deletes_every_latest_checkpoint_is_one_line(
    tmp_path, monkeypatch):
  first, _ = _run_with_checkpoints(tmp_path, [10, 20], max_to_keep=1)
  _latest_checkpoint_answers(monkeypatch, *[first] * 10)
  with pytest.raises(UserError, match=r"--model_dir=.*deleted each of its "
                     r"latest 5 checkpoints.*--keep_checkpoints"):
    run_dir.load_trained_model(str(tmp_path))


def test_a_named_checkpoint_is_read_once_and_named_if_gone(tmp_path):
  first, second = _run_with_checkpoints(tmp_path, [10, 20], max_to_keep=1)
  assert run_dir.load_trained_model(str(tmp_path), second).step == 20
  with pytest.raises(UserError, match="ckpt-10.*not a readable"):
    run_dir.load_trained_model(str(tmp_path), first)


def test_a_damaged_latest_checkpoint_is_not_retried_as_if_deleted(tmp_path):
  (path,) = _run_with_checkpoints(tmp_path, [10], max_to_keep=1)
  with open(f"{path}.index", "wb") as f:
    f.write(b"damaged")
  with pytest.raises(UserError, match="ckpt-10.*not a readable"):
    run_dir.load_trained_model(str(tmp_path))
