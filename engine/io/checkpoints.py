"""Checkpoints that resume exactly and refuse another model's state.

A checkpoint holds the encoder, decoder, optimizer (with its slots), the
global step (and a moving average, a loss scale, recoveries where the run has
them): every batch and noise draw is a pure function of (seed, step). Its
architecture fingerprint is checked before restoring, so another model's
`--model_dir` is refused instead of being half-restored.

A checkpoint that cannot be read (truncated, garbage, half-written when the
machine died) is never trained on: restoring falls back to the newest readable
one (`checkpoint_repair` sets the bad ones aside); if none is readable the
run stops and says so.
"""

from __future__ import annotations

import os
from typing import Optional

import tensorflow as tf

from engine.errors import CheckpointMismatchError, UserError, quoted, reason
from engine.io import checkpoint_repair as repair
from engine.io import files
from engine.io.checkpoint_repair import checkpoints_on_disk  # noqa: F401
from models.architecture import Architecture

_FINGERPRINT_KEY = "fingerprint/.ATTRIBUTES/VARIABLE_VALUE"
_PREFIX = repair.PREFIX
BEST_DIR = "best"  # Where `--keep_best` keeps the best checkpoint.
# What reading damaged files raises (short reads: IndexError; bad: DataLoss).
_READ_ERRORS = (tf.errors.OpError, IndexError, OSError, RuntimeError,
                UnicodeDecodeError)


class _Unreadable(Exception):
  """A checkpoint whose files cannot be read back."""


def _reader(path: str):
  """A reader of the checkpoint at prefix `path`.

  Not `tf.train.load_checkpoint`: it first asks whether the prefix is a
  directory, which `ram://` answers yes for any prefix.
  """
  return tf.compat.v1.train.NewCheckpointReader(path)


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:160] if text else ''}"


# What makes an architecture's field differ: the settings to pass.
_ARCHITECTURE_FLAGS = {
    "model": "--model", "latent_dim": "--latent_dim",
    "image_shape": "--image_size/--channels or the data it was trained on",
    "classes": "--conditional (and the same labels)",
    "learned_scale": "--reconstruction_loss (discretized_logistic and "
                     "gaussian_learned learn a scale; bernoulli and gaussian "
                     "do not)",
}


def _difference(stored: Architecture, ours: Architecture) -> str:
  """How a stored architecture differs from this run's, and which flags
  decide it."""
  parts = []
  for field, flag in _ARCHITECTURE_FLAGS.items():
    theirs, mine = getattr(stored, field), getattr(ours, field)
    if theirs != mine:
      parts.append(f"{field}={_shown(theirs)} there, {field}={_shown(mine)} "
                   f"here ({flag})")
  return "; ".join(parts)


def _shown(value) -> str:
  if isinstance(value, tuple):
    return "x".join(str(d) for d in value)
  if isinstance(value, bool):
    return "1" if value else "none"
  return str(value) if value != 0 else "none"


class Checkpointer:
  """Saves and restores a model's training state: the one saver of a run
  (periodic, preemption and final checkpoints all go through `save`).

  Args:
    directory: Where checkpoints are written: the run's `--model_dir` on the
      chief, a scratch directory on other workers (all workers must save,
      since saving mirrored variables is a collective operation).
    encoder, decoder: The model's Keras models.
    optimizer: The plain optimizer (not a `LossScaleOptimizer` wrapping
      it), so checkpoints restore across precision policies.
    global_step: The step counter.
    architecture: This run's model's `Architecture`.
    max_to_keep: Number of checkpoints kept.
    loss_scale: A dynamic loss scale's variables (float16), saved beside the
      rest and restored when both sides have one.
    restore_from: Where the latest checkpoint is read from (default:
      `directory`); every worker restores the chief's.
    repair: Move unreadable checkpoints aside (the chief only: other workers
      read the chief's directory and must not change it).
    flag_dir: The `--model_dir` errors name (default: `directory`).
    averages: The weights' `WeightAverage` (a checkpoint without averages
      starts them at its weights).
    state: More variables by name (recoveries), restored where present.
  """

  def __init__(self, directory: str, *, encoder, decoder, optimizer,
               global_step: tf.Variable, architecture: Architecture,
               max_to_keep: int, loss_scale: Optional[dict] = None,
               restore_from: Optional[str] = None, repair: bool = True,
               flag_dir: Optional[str] = None, averages=None,
               state: Optional[dict] = None):
    self._directory = restore_from or directory
    self._write_directory = directory
    self._flag_dir = flag_dir or self._directory
    self._max_to_keep = max_to_keep
    self._repair = repair
    self._step_counter = global_step
    self._manager = None
    self._best_manager = None
    self.architecture = architecture
    self._fingerprint = architecture.encode()
    core = dict(
        encoder=encoder, decoder=decoder, optimizer=optimizer,
        global_step=global_step,
        fingerprint=tf.Variable(self._fingerprint, trainable=False),
    )
    self._core = tf.train.Checkpoint(**core)
    self._loss_scale = (tf.train.Checkpoint(**loss_scale) if loss_scale
                        else None)
    extra = {"loss_scale": self._loss_scale} if self._loss_scale else {}
    self._averages = averages
    if averages is not None:
      extra["averages"] = tf.train.Checkpoint(values=averages.averages)
    self._state = tf.train.Checkpoint(**state) if state else None
    if self._state is not None:
      extra["state"] = self._state
    self.checkpoint = tf.train.Checkpoint(**core, **extra)

  @property
  def manager(self) -> tf.train.CheckpointManager:
    # Created after restoring: it reads the `checkpoint` state file, which
    # restoring may have repaired.
    if self._manager is None:
      self._manager = tf.train.CheckpointManager(
          self.checkpoint, self._write_directory,
          max_to_keep=self._max_to_keep, step_counter=self._step_counter)
    return self._manager

  @property
  def latest(self) -> Optional[str]:
    """The newest checkpoint to restore from."""
    return tf.train.latest_checkpoint(self._directory)

  def restore_latest(self) -> Optional[str]:
    """Restores the newest readable checkpoint, if any.

    Unreadable newer ones are skipped with a warning (and moved aside, when
    repairing).

    Returns:
      The restored checkpoint's path, or None if the directory has none.

    Raises:
      CheckpointMismatchError: If a checkpoint belongs to another
        architecture or does not hold this model's variables.
      UserError: If there are checkpoints but none can be read.
    """
    if self._repair:
      repair.remove_half_written(self._directory)
    candidates = repair.checkpoints_on_disk(self._directory)
    unreadable = []
    for path in candidates:
      try:
        self._restore(path)
      except _Unreadable as e:
        unreadable.append((path, str(e)))
        continue
      state_damaged = not repair.state_file_readable(self._directory)
      if unreadable or state_damaged:
        repair.set_aside(self._directory, unreadable, path, candidates,
                         state_damaged, self._repair)
      return path
    if unreadable:
      listed = "; ".join(f"{os.path.basename(p)} ({why})"
                         for p, why in unreadable)
      raise UserError(
          f"--model_dir={self._directory}: no readable checkpoint ({listed})."
          " Move them away to start from scratch")
    return None

  def _restore(self, path: str) -> None:
    try:
      reader = _reader(path)
      names = reader.get_variable_to_shape_map()
    except _READ_ERRORS + (ValueError,) as e:
      raise _Unreadable(_first_line(e)) from None
    self._check_fingerprint(path, reader if _FINGERPRINT_KEY in names
                            else None)
    try:
      self._core.restore(path).expect_partial(
      ).assert_existing_objects_matched()
      if self._loss_scale is not None:
        tf.train.Checkpoint(loss_scale=self._loss_scale).restore(
            path).expect_partial()  # Absent when written under another policy.
      if self._state is not None:  # Absent when written without it.
        tf.train.Checkpoint(state=self._state).restore(path).expect_partial()
      if self._averages is not None:
        if any(name.startswith("averages/") for name in names):
          tf.train.Checkpoint(averages=self.checkpoint.averages).restore(
              path).expect_partial()
        else:  # Written without --ema_decay: start at the restored weights.
          self._averages.reset()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      first_line = str(e).strip().splitlines()[0][:200]
      raise CheckpointMismatchError(
          f"--model_dir={self._directory}: checkpoint {path} does not match "
          f"this model ({first_line})") from None
    except _READ_ERRORS as e:
      raise _Unreadable(_first_line(e)) from None

  def _check_fingerprint(self, path: str, reader) -> None:
    if reader is None:
      raise CheckpointMismatchError(
          f"--model_dir={self._directory}: checkpoint {path} was not written "
          "by vae-engine (it has no architecture fingerprint); use a new "
          "--model_dir")
    try:
      stored = reader.get_tensor(_FINGERPRINT_KEY)
    except _READ_ERRORS + (ValueError,) as e:
      raise _Unreadable(_first_line(e)) from None
    stored = stored.decode() if isinstance(stored, bytes) else str(stored)
    if stored != self._fingerprint:
      difference = _difference(Architecture.decode(stored), self.architecture)
      raise CheckpointMismatchError(
          f"--model_dir={quoted(self._directory)}: holds a checkpoint of "
          f"another model ({stored}); this run is {self._fingerprint}. "
          f"They differ in {difference}. Use another --model_dir or the "
          "flags that wrote it")

  def save_best(self, step: int) -> str:
    """Writes `<directory>/best/ckpt-<step>` (the two newest are kept: the
    one `best.json` names always exists); returns its path."""
    if self._best_manager is None:
      self._best_manager = tf.train.CheckpointManager(
          self.checkpoint, files.join(self._write_directory, BEST_DIR),
          max_to_keep=2, step_counter=self._step_counter)
    try:
      return self._best_manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
      raise UserError(
          f"--model_dir={quoted(self._flag_dir)}: could not write the best "
          f"checkpoint ckpt-{step} ({reason(e)}); the previous best is "
          "intact") from None

  def save(self, step: int) -> str:
    """Writes a checkpoint for `step`; returns the chief's path for it.

    Raises:
      UserError: If it cannot be written (disk full, directory gone or
        read-only), in the OS's words; the previous checkpoint is untouched,
        since TF writes a new one beside it and the state file is replaced
        last.
    """
    previous = self.latest
    try:
      self.manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
      kept = (f"the previous checkpoint, {previous}, is intact" if previous
              else "no earlier checkpoint exists")
      raise UserError(
          f"--model_dir={quoted(self._flag_dir)}: could not write checkpoint "
          f"ckpt-{step} ({reason(e)}); {kept}. Free space or fix the "
          "directory, then re-run to resume") from None
    return files.join(self._directory, f"{_PREFIX}-{step}")

  def latest_step(self) -> Optional[int]:
    """The step of the newest checkpoint, if any."""
    latest = self.latest
    return int(latest.rsplit("-", 1)[1]) if latest else None


def read_architecture(path: str) -> tuple[Architecture, int]:
  """(architecture, global step) of the checkpoint at prefix `path`.

  Raises:
    UserError: If it is not a readable vae-engine checkpoint.
  """
  try:
    reader = _reader(path)
    fingerprint = reader.get_tensor(_FINGERPRINT_KEY)
    step = int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))
  except _READ_ERRORS + (ValueError,) as e:
    raise UserError(f"{quoted(path)}: not a readable vae-engine checkpoint "
                    f"({reason(e)})") from None
  return Architecture.decode(fingerprint.decode()), step
