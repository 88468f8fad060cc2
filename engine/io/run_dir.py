"""What a run directory holds besides checkpoints and summaries: the run's
settings (`config.json`, and `flags.txt` to run it again), and the trained
model a tool rebuilds from a checkpoint and those settings."""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

import tensorflow as tf

from engine.config import RunConfig
from engine.config import settings
from engine.errors import UserError, quoted, reason
from engine.io import checkpoints
from engine.io import files
from models.base import VariationalAutoencoder

CONFIG_JSON = "config.json"
CONFIG_FLAGFILE = "flags.txt"


def write_config(model_dir: str, config: RunConfig) -> None:
  """Writes the resolved config as JSON and as a flagfile (atomically)."""
  for name, text in ((CONFIG_JSON, config.to_json()),
                     (CONFIG_FLAGFILE, config.to_flagfile())):
    files.write_atomically(files.join(model_dir, name), text)


def read_run_config(model_dir: str) -> RunConfig:
  """Reads `<model_dir>/config.json`, written by every run.

  Raises:
    UserError: If it is missing or unreadable.
  """
  path = files.join(model_dir, CONFIG_JSON)
  try:
    return RunConfig.from_dict(json.loads(files.read_text(path)))
  except tf.errors.NotFoundError:
    raise UserError(f"--model_dir={quoted(model_dir)}: no {CONFIG_JSON}; "
                    "not a vae-engine run directory") from None
  except settings.ConfigError as e:
    raise UserError(f"{quoted(path)}: {e}") from None
  except UserError:  # Its model cannot be loaded here: that model's line.
    raise
  except (tf.errors.OpError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{quoted(path)}: unreadable ({reason(e)})") from None


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


def load_trained_model(model_dir: str,
                       checkpoint: Optional[str] = None) -> TrainedModel:
  """Rebuilds a run's model from the architecture its checkpoint records
  and restores the checkpoint's weights into it.

  Args:
    model_dir: The run's directory.
    checkpoint: A checkpoint path; the latest in `model_dir` by default.

  Raises:
    UserError: If the directory has no config or checkpoint, or the
      checkpoint does not fit the model.
  """
  config = read_run_config(model_dir)
  if checkpoint:
    return _restore(config, checkpoint)
  # A tool may read a run while it trains (it takes no lock), and the run
  # keeps only its last checkpoints: the latest can be deleted between
  # finding it and reading it. Then the new latest is read.
  for _ in range(_READ_ATTEMPTS):
    path = tf.train.latest_checkpoint(model_dir)
    if path is None:
      raise UserError(f"--model_dir={quoted(model_dir)}: holds no checkpoint")
    try:
      return _restore(config, path)
    except (UserError, tf.errors.NotFoundError):
      if tf.io.gfile.exists(f"{path}.index"):
        raise  # Not deleted: unreadable, in the reader's words.
  raise UserError(
      f"--model_dir={quoted(model_dir)}: the run deleted each of its latest "
      f"{_READ_ATTEMPTS} checkpoints before it could be read (it saves "
      "them more often than a tool reads one); pass --checkpoint or raise "
      "the run's --keep_checkpoints")


# How many checkpoints, each deleted by the run before it was read, a tool
# tries before it gives up.
_READ_ATTEMPTS = 5


def _restore(config: RunConfig, path: str) -> TrainedModel:
  """The model of the checkpoint at prefix `path`, with its weights."""
  architecture, step = checkpoints.read_architecture(path)
  vae = architecture.build()
  tf.train.Checkpoint(encoder=vae.encoder, decoder=vae.decoder).restore(
      path).expect_partial().assert_existing_objects_matched()
  return TrainedModel(config, vae, step, path)
