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
from engine.io import architecture_check
from engine.io import checkpoint_repair as repair
from engine.io import files
from engine.io.checkpoint_repair import checkpoints_on_disk  # noqa: F401
from models.architecture import Architecture

_PREFIX = repair.PREFIX
BEST_DIR = "best"  # Where `--keep_best` keeps the best checkpoint.
_FINGERPRINT_KEY = architecture_check.FINGERPRINT_KEY
_READ_ERRORS = architecture_check.READ_ERRORS
_Unreadable = architecture_check.Unreadable
_reader = architecture_check.reader
_first_line = architecture_check.first_line
read_architecture = architecture_check.read_architecture


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
      best_dir = files.join(self._directory, BEST_DIR)
      if files.gfile.isdir(best_dir):
        repair.remove_half_written(best_dir)
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
    architecture_check.check(
        path, reader, self.architecture, "model_dir", self._directory,
        "use another --model_dir or the flags that wrote it")

  def initialize_from(self, source: str) -> str:
    """Starts a new run from the weights of another run's checkpoint
    (`--init_from`): its run directory's latest, or a checkpoint path. Only
    the encoder and decoder are taken (and a moving average starts at
    them); the optimizer, step and schedule start afresh.

    Returns:
      The checkpoint the weights came from.

    Raises:
      UserError: If `source` holds no readable vae-engine checkpoint or one
        of another architecture.
    """
    path = source
    if files.gfile.isdir(source):
      path = (tf.train.latest_checkpoint(source)
              or next(iter(repair.checkpoints_on_disk(source)), None))
      if path is None:
        raise UserError(f"--init_from={quoted(source)}: holds no checkpoint; "
                        "pass a run directory that has trained, or a "
                        "checkpoint path")
    try:
      reader = _reader(path)
      names = reader.get_variable_to_shape_map()
      architecture_check.check(
          path, reader if _FINGERPRINT_KEY in names else None,
          self.architecture, "init_from", source,
          "pass a run of this model, or the flags of that run")
      tf.train.Checkpoint(encoder=self._core.encoder,
                          decoder=self._core.decoder).restore(
                              path).expect_partial(
                              ).assert_existing_objects_matched()
    except (_Unreadable, ValueError, AssertionError) + _READ_ERRORS as e:
      raise UserError(f"--init_from={quoted(source)}: not a readable "
                      f"vae-engine checkpoint ({reason(e)})") from None
    if self._averages is not None:
      self._averages.reset()
    return path

  def save_best(self, step: int) -> str:
    """Writes `<directory>/best/ckpt-<step>` (the two newest are kept: the
    one `best.json` names always exists); returns its path."""
    if self._best_manager is None:
      self._best_manager = tf.train.CheckpointManager(
          self.checkpoint, files.join(self._write_directory, BEST_DIR),
          max_to_keep=2, step_counter=self._step_counter)
    best_dir = files.join(self._write_directory, BEST_DIR)
    try:
      files.gfile.makedirs(best_dir)
      repair.note_save(best_dir, step)
      path = self._best_manager.save(checkpoint_number=step)
      repair.save_done(best_dir)
      return path
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
      repair.note_save(self._write_directory, step)
      self.manager.save(checkpoint_number=step)
      repair.save_done(self._write_directory)
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
