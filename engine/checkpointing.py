"""Checkpoints that resume exactly and refuse another model's state.

A checkpoint holds the encoder, decoder, optimizer (with its slots) and the
global step. Nothing else is needed to continue exactly: every batch and every
noise draw is a pure function of (seed, step) (see `engine.data.pipeline`).
It also holds the architecture's fingerprint, checked before restoring, so a
`--model_dir` written by another `--model` or `--latent_dim` is refused with a
clear message instead of being half-restored.

A checkpoint that cannot be read (truncated, garbage, half-written when the
machine died) is never trained on: restoring falls back to the newest readable
one, warns naming the bad one and moves it into `<model_dir>/corrupt/`; if
none is readable the run stops and says so. Candidates are found by their
files, not through the `checkpoint` state file, which may itself be damaged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Optional

from absl import logging
import tensorflow as tf

import models
from engine import files
from engine.config import RunConfig
from engine.errors import CheckpointMismatchError, UserError, quoted
from engine.steps import Trainer
from models.base import VariationalAutoencoder

CONFIG_JSON = "config.json"

_FINGERPRINT_KEY = "fingerprint/.ATTRIBUTES/VARIABLE_VALUE"
_PREFIX = "ckpt"
# What reading damaged checkpoint files raises (TF's reader turns short reads
# into IndexError, checksum failures into DataLossError, ...).
_READ_ERRORS = (tf.errors.OpError, IndexError, OSError, RuntimeError,
                UnicodeDecodeError)
CORRUPT_DIR = "corrupt"


class _Unreadable(Exception):
  """A checkpoint whose files cannot be read back."""


def checkpoints_on_disk(directory: str) -> list[str]:
  """Checkpoint prefixes in `directory` by their index files, newest first."""
  found = []
  for index in files.gfile.glob(files.join(directory, f"{_PREFIX}-*.index")):
    match = re.fullmatch(rf"{_PREFIX}-(\d+)\.index", os.path.basename(index))
    if match:
      found.append((int(match.group(1)), index[:-len(".index")]))
  return [path for _, path in sorted(found, reverse=True)]


def _reader(path: str):
  """A reader of the checkpoint at prefix `path`.

  Not `tf.train.load_checkpoint`: it first asks whether the prefix is a
  directory, which `ram://` answers yes for any prefix.
  """
  return tf.compat.v1.train.NewCheckpointReader(path)


def _first_line(error: Exception) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:160] if text else ''}"


def architecture_fingerprint(model_name: str, latent_dim: int,
                             image_shape: tuple[int, ...],
                             num_classes: int = 0,
                             learned_scale: bool = False) -> str:
  """A string that differs whenever restoring weights could not work (a
  plain unconditional model's is the same as before conditional models and
  learned scales existed)."""
  shape = "x".join(str(d) for d in image_shape)
  classes = f";classes={num_classes}" if num_classes else ""
  scale = ";learned_scale=1" if learned_scale else ""
  return (f"model={model_name};latent_dim={latent_dim};image_shape={shape}"
          f"{classes}{scale}")


# What makes a fingerprint's field differ: the settings to pass.
_FINGERPRINT_FLAGS = {
    "model": "--model", "latent_dim": "--latent_dim",
    "image_shape": "--image_size/--channels or the data it was trained on",
    "classes": "--conditional (and the same labels)",
    "learned_scale": "--reconstruction_loss (discretized_logistic and "
                     "gaussian_learned learn a scale; bernoulli and gaussian "
                     "do not)",
}


def _fingerprint_fields(fingerprint: str) -> dict[str, str]:
  return dict(item.split("=", 1) for item in fingerprint.split(";")
              if "=" in item)


def fingerprint_difference(stored: str, ours: str) -> str:
  """How two fingerprints differ, and which flags decide it."""
  theirs, mine = _fingerprint_fields(stored), _fingerprint_fields(ours)
  parts = []
  for key in _FINGERPRINT_FLAGS:
    if theirs.get(key) != mine.get(key):
      parts.append(f"{key}={theirs.get(key, 'none')} there, "
                   f"{key}={mine.get(key, 'none')} here "
                   f"({_FINGERPRINT_FLAGS[key]})")
  return "; ".join(parts) or f"{stored} there, {ours} here"


# A line of the `checkpoint` state file (a CheckpointState text proto).
_STATE_LINE = re.compile(
    r'(model_checkpoint_path|all_model_checkpoint_paths): "[^"\n]*"|'
    r'(all_model_checkpoint_timestamps|last_preserved_timestamp): [0-9.e+-]+')


def _state_proto(latest: str, paths: list[str]) -> str:
  """The `checkpoint` state file (a CheckpointState text proto), with paths
  relative to its directory as TensorFlow writes them."""
  lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
  lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"'
            for p in paths]
  return "\n".join(lines) + "\n"


class Checkpointer:
  """Saves and restores a `Trainer`'s state.

  Args:
    directory: Where checkpoints are written: the run's `--model_dir` on the
      chief, a scratch directory on other workers (all workers must save,
      since saving mirrored variables is a collective operation).
    trainer: Whose model, optimizer and step are saved.
    fingerprint: `architecture_fingerprint(...)` of this run's model.
    max_to_keep: Number of checkpoints kept.
    restore_from: Where the latest checkpoint is read from (default:
      `directory`); every worker restores the chief's.
    repair: Move unreadable checkpoints aside (the chief only: other workers
      read the chief's directory and must not change it).
  """

  def __init__(self, directory: str, trainer: Trainer, fingerprint: str,
               max_to_keep: int, restore_from: Optional[str] = None,
               repair: bool = True):
    self._directory = restore_from or directory
    self._write_directory = directory
    self._max_to_keep = max_to_keep
    self._repair = repair
    self._step_counter = trainer.global_step
    self._manager = None
    self._fingerprint = fingerprint
    # The plain optimizer is saved, not a LossScaleOptimizer wrapping it, so
    # checkpoints restore across precision policies; the loss scale's own
    # state is saved beside it and restored when both sides have one.
    core = dict(
        encoder=trainer.vae.encoder,
        decoder=trainer.vae.decoder,
        optimizer=trainer.base_optimizer,
        global_step=trainer.global_step,
        fingerprint=tf.Variable(fingerprint, trainable=False),
    )
    self._core = tf.train.Checkpoint(**core)
    self._loss_scale = (tf.train.Checkpoint(**trainer.loss_scale_variables)
                        if trainer.loss_scale_variables else None)
    extra = {"loss_scale": self._loss_scale} if self._loss_scale else {}
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
      # Half-written saves of a killed run (TF writes `<prefix>_temp/` and
      # merges it into place): never readable, safe to drop.
      for stale in files.gfile.glob(files.join(self._directory,
                                               f"{_PREFIX}-*_temp")):
        files.remove_tree(stale)
    candidates = checkpoints_on_disk(self._directory)
    unreadable = []
    for path in candidates:
      try:
        self._restore(path)
      except _Unreadable as e:
        unreadable.append((path, str(e)))
        continue
      state_damaged = not self._state_file_readable()
      if unreadable or state_damaged:
        self._set_aside(unreadable, path, candidates, state_damaged)
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
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      first_line = str(e).strip().splitlines()[0][:200]
      raise CheckpointMismatchError(
          f"--model_dir={self._directory}: checkpoint {path} does not match "
          f"this model ({first_line})") from None
    except _READ_ERRORS as e:
      raise _Unreadable(_first_line(e)) from None

  def _state_file_readable(self) -> bool:
    """Whether the `checkpoint` state file is absent or reads as the text
    proto TensorFlow writes (checked here: TF's own reader logs a parse
    error and silently ignores such a file)."""
    path = files.join(self._directory, "checkpoint")
    if not files.gfile.exists(path):
      return True
    try:
      text = files.read_text(path)
    except (UnicodeDecodeError, tf.errors.OpError):
      return False
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(_STATE_LINE.fullmatch(line) for line in lines)

  def _set_aside(self, unreadable, restored: str, candidates,
                 state_damaged: bool) -> None:
    """Warns about skipped checkpoints and a damaged state file; the chief
    moves the checkpoints aside and rewrites the state file."""
    for path, why in unreadable:
      where = ""
      if self._repair:
        quarantine = files.join(self._directory, CORRUPT_DIR)
        files.gfile.makedirs(quarantine)
        for part in files.gfile.glob(path + ".*"):
          files.gfile.rename(part, files.join(quarantine,
                                              os.path.basename(part)),
                             overwrite=True)
        where = f"; moved to {quarantine}/"
      logging.warning("checkpoint %s is unreadable (%s): resuming from %s "
                      "instead%s", path, why, restored, where)
    state = files.join(self._directory, "checkpoint")
    if state_damaged:
      logging.warning("the checkpoint state file %s is unreadable: ignored%s",
                      state, "; rewritten from the checkpoints on disk"
                      if self._repair else "")
    if self._repair:
      # Rewritten atomically, so that the manager and tools see only
      # readable checkpoints.
      bad = {path for path, _ in unreadable}
      good = sorted((p for p in candidates if p not in bad),
                    key=lambda p: int(p.rsplit("-", 1)[1]))
      files.write_atomically(state, _state_proto(restored, good))

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
      raise CheckpointMismatchError(
          f"--model_dir={quoted(self._directory)}: holds a checkpoint of "
          f"another model ({stored}); this run is {self._fingerprint}. "
          f"They differ in {fingerprint_difference(stored, self._fingerprint)}"
          ". Use another --model_dir or the flags that wrote it")

  def save(self, step: int) -> str:
    """Writes a checkpoint for `step` and returns its path."""
    return self.manager.save(checkpoint_number=step)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A model restored from a run's directory, for tools.

  Attributes:
    config: The run's saved config.
    vae: The model with the checkpoint's weights.
    step: The checkpoint's global step.
    checkpoint: The checkpoint's path.
  """

  config: RunConfig
  vae: VariationalAutoencoder
  step: int
  checkpoint: str


def read_run_config(model_dir: str) -> RunConfig:
  """Reads `<model_dir>/config.json`, written by every run.

  Raises:
    UserError: If it is missing or unreadable.
  """
  path = files.join(model_dir, CONFIG_JSON)
  try:
    return RunConfig.from_dict(json.loads(files.read_text(path)))
  except tf.errors.NotFoundError:
    raise UserError(f"--model_dir={model_dir}: no {CONFIG_JSON}; not a "
                    "vae-engine run directory") from None
  except (tf.errors.OpError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{path}: unreadable ({e})") from None


def load_trained_model(model_dir: str,
                       checkpoint: Optional[str] = None) -> TrainedModel:
  """Rebuilds a run's model and restores a checkpoint's weights into it.

  Args:
    model_dir: The run's directory.
    checkpoint: A checkpoint path; the latest in `model_dir` by default.

  Raises:
    UserError: If the directory has no config or checkpoint, or the
      checkpoint does not fit the config's model.
  """
  config = read_run_config(model_dir)
  path = checkpoint or tf.train.latest_checkpoint(model_dir)
  if path is None:
    raise UserError(f"--model_dir={model_dir}: holds no checkpoint")
  try:
    reader = _reader(path)
    fingerprint = reader.get_tensor(_FINGERPRINT_KEY)
    step = int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE"))
  except (tf.errors.OpError, ValueError) as e:
    raise UserError(f"{path}: not a readable vae-engine checkpoint "
                    f"({str(e).splitlines()[0][:160]})") from None
  fields = _fingerprint_fields(fingerprint.decode())
  image_shape = tuple(int(d) for d in fields["image_shape"].split("x"))
  vae = models.get(config.model.name).create(
      image_shape, config.model.latent_dim,
      learned_scale=config.model.learned_scale,
      num_classes=int(fields.get("classes", 0)))
  tf.train.Checkpoint(encoder=vae.encoder, decoder=vae.decoder).restore(
      path).expect_partial().assert_existing_objects_matched()
  return TrainedModel(config, vae, step, path)
