"""Checkpoints that resume exactly and refuse another model's state.

A checkpoint holds the encoder, decoder, optimizer (with its slots) and the
global step. Nothing else is needed to continue exactly: every batch and every
noise draw is a pure function of (seed, step) (see `engine.data.pipeline`).
It also holds the architecture's fingerprint, checked before restoring, so a
`--model_dir` written by another `--model` or `--latent_dim` is refused with a
clear message instead of being half-restored.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import tensorflow as tf

import models
from engine.config import RunConfig
from engine.errors import CheckpointMismatchError, UserError
from engine.steps import Trainer
from models.base import VariationalAutoencoder

CONFIG_JSON = "config.json"

_FINGERPRINT_KEY = "fingerprint/.ATTRIBUTES/VARIABLE_VALUE"


def architecture_fingerprint(model_name: str, latent_dim: int,
                             image_shape: tuple[int, ...]) -> str:
  """A string that differs whenever restoring weights could not work."""
  shape = "x".join(str(d) for d in image_shape)
  return f"model={model_name};latent_dim={latent_dim};image_shape={shape}"


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
  """

  def __init__(self, directory: str, trainer: Trainer, fingerprint: str,
               max_to_keep: int, restore_from: Optional[str] = None):
    self._directory = restore_from or directory
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
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, directory, max_to_keep=max_to_keep,
        step_counter=trainer.global_step)

  @property
  def latest(self) -> Optional[str]:
    """The newest checkpoint to restore from."""
    return tf.train.latest_checkpoint(self._directory)

  def restore_latest(self) -> Optional[str]:
    """Restores the newest checkpoint, if any.

    Returns:
      The restored checkpoint's path, or None if the directory has none.

    Raises:
      CheckpointMismatchError: If the checkpoint belongs to another
        architecture or does not hold this model's variables.
    """
    path = self.latest
    if path is None:
      return None
    self._check_fingerprint(path)
    try:
      self._core.restore(path).expect_partial(
      ).assert_existing_objects_matched()
      if self._loss_scale is not None:
        tf.train.Checkpoint(loss_scale=self._loss_scale).restore(
            path).expect_partial()  # Absent when written under another policy.
    except (AssertionError, ValueError, tf.errors.OpError) as e:
      first_line = str(e).strip().splitlines()[0][:200]
      raise CheckpointMismatchError(
          f"--model_dir={self._directory}: checkpoint {path} does not match "
          f"this model ({first_line})") from None
    return path

  def _check_fingerprint(self, path: str) -> None:
    try:
      stored = tf.train.load_variable(path, _FINGERPRINT_KEY)
    except (tf.errors.NotFoundError, ValueError):
      raise CheckpointMismatchError(
          f"--model_dir={self._directory}: checkpoint {path} was not written "
          "by vae-engine (it has no architecture fingerprint); use a new "
          "--model_dir") from None
    stored = stored.decode() if isinstance(stored, bytes) else str(stored)
    if stored != self._fingerprint:
      raise CheckpointMismatchError(
          f"--model_dir={self._directory}: holds a checkpoint of another "
          f"model ({stored}); this run is {self._fingerprint}. Use another "
          "--model_dir or the flags that wrote it")

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
  path = os.path.join(model_dir, CONFIG_JSON)
  try:
    with open(path) as f:
      return RunConfig.from_dict(json.load(f))
  except FileNotFoundError:
    raise UserError(f"--model_dir={model_dir}: no {CONFIG_JSON}; not a "
                    "vae-engine run directory") from None
  except (OSError, ValueError, KeyError, TypeError) as e:
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
    fingerprint = tf.train.load_variable(path, _FINGERPRINT_KEY)
    step = int(tf.train.load_variable(
        path, "global_step/.ATTRIBUTES/VARIABLE_VALUE"))
  except (tf.errors.OpError, ValueError) as e:
    raise UserError(f"{path}: not a readable vae-engine checkpoint "
                    f"({str(e).splitlines()[0][:160]})") from None
  fields = dict(item.split("=", 1) for item in fingerprint.decode().split(";"))
  image_shape = tuple(int(d) for d in fields["image_shape"].split("x"))
  vae = models.get(config.model.name).build(image_shape,
                                            config.model.latent_dim)
  tf.train.Checkpoint(encoder=vae.encoder, decoder=vae.decoder).restore(
      path).expect_partial().assert_existing_objects_matched()
  return TrainedModel(config, vae, step, path)
