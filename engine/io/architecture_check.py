"""A checkpoint's architecture fingerprint: reading it, and saying how it
differs from this run's model (which flags decide each field).

Every checkpoint holds `fingerprint` (an `Architecture` encoded as a string),
so another model's checkpoint is refused with the fields that differ instead
of being half-restored.
"""

from __future__ import annotations

import tensorflow as tf

from engine.errors import CheckpointMismatchError, UserError, quoted, reason
from models.architecture import Architecture

FINGERPRINT_KEY = "fingerprint/.ATTRIBUTES/VARIABLE_VALUE"
# What reading damaged files raises (short reads: IndexError; bad: DataLoss).
READ_ERRORS = (tf.errors.OpError, IndexError, OSError, RuntimeError,
               UnicodeDecodeError)


class Unreadable(Exception):
  """A checkpoint whose files cannot be read back."""


def reader(path: str):
  """A reader of the checkpoint at prefix `path`.

  Not `tf.train.load_checkpoint`: it first asks whether the prefix is a
  directory, which `ram://` answers yes for any prefix.
  """
  return tf.compat.v1.train.NewCheckpointReader(path)


def first_line(error: Exception) -> str:
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


def difference(stored: Architecture, ours: Architecture) -> str:
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


def check(path: str, checkpoint_reader, ours: Architecture, flag: str,
          named: str, advice: str) -> None:
  """Raises unless the checkpoint at `path` is of the architecture `ours`.

  Args:
    path: The checkpoint's prefix.
    checkpoint_reader: Its reader, or None when it has no fingerprint.
    ours: This run's architecture.
    flag: The flag that led to the checkpoint (`model_dir`, `init_from`).
    named: What that flag was given.
    advice: What to do about a mismatch.

  Raises:
    CheckpointMismatchError: If it has no fingerprint or another one.
    Unreadable: If the fingerprint cannot be read.
  """
  if checkpoint_reader is None:
    raise CheckpointMismatchError(
        f"--{flag}={named}: checkpoint {path} was not written by vae-engine "
        f"(it has no architecture fingerprint); {advice}")
  try:
    stored = checkpoint_reader.get_tensor(FINGERPRINT_KEY)
  except READ_ERRORS + (ValueError,) as e:
    raise Unreadable(first_line(e)) from None
  stored = stored.decode() if isinstance(stored, bytes) else str(stored)
  if stored != ours.encode():
    raise CheckpointMismatchError(
        f"--{flag}={quoted(named)}: holds a checkpoint of another model "
        f"({stored}); this run is {ours.encode()}. They differ in "
        f"{difference(Architecture.decode(stored), ours)}; {advice}")


def read_architecture(path: str) -> tuple[Architecture, int]:
  """(architecture, global step) of the checkpoint at prefix `path`.

  Raises:
    UserError: If it is not a readable vae-engine checkpoint.
  """
  try:
    checkpoint_reader = reader(path)
    fingerprint = checkpoint_reader.get_tensor(FINGERPRINT_KEY)
    step = int(checkpoint_reader.get_tensor(
        "global_step/.ATTRIBUTES/VARIABLE_VALUE"))
  except READ_ERRORS + (ValueError,) as e:
    raise UserError(f"{quoted(path)}: not a readable vae-engine checkpoint "
                    f"({reason(e)})") from None
  return Architecture.decode(fingerprint.decode()), step
