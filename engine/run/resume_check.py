"""A run directory belongs to one run: what a resumed run must share with it.

A run that finds checkpoints in its `--model_dir` continues that run, so it
must train the same thing: every setting not declared `resume_safe` (the
model, the objective, the optimizer and its schedule, the seed, the batch,
the data's preprocessing) must equal the run's `config.json`, and the data
itself must be the data the run trained on, recognised by its fingerprint
(`data.json`: counts, image shape, classes and a digest of the training
pixels' mean), so that moving the data, or reading a converted copy of it,
still resumes. A difference is refused before training, in one line that
names each one; the run's files are left as they are. `--init_from` is the
way to start a new run from a finished one's weights.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional

import numpy as np
import tensorflow as tf

from engine.config import RunConfig, all_settings
from engine.errors import CheckpointMismatchError, UserError, quoted
from engine.io import files
from engine.io import run_dir

DATA_JSON = "data.json"
# One line per resume that changed resume-safe settings (step, changes).
HISTORY_JSONL = "settings_history.jsonl"
# Resume-safe settings that say where files go, not how the run trains:
# changing them is not history worth keeping.
_LOGISTICS = ("model_dir", "export_dir", "init_from", "tfds_data_dir",
              "data_dir", "dataset", "download_timeout_s")
# Where the data comes from: checked through the data's fingerprint when the
# run has one (`data.json`), else by value.
_SOURCE_SETTINGS = ("dataset", "data_dir", "tfds_data_dir")
_MAX_LISTED = 6


def _shown(value) -> str:
  if isinstance(value, (tuple, list)):
    return ",".join(str(v) for v in value)
  return quoted("none" if value is None else value)


def _differences(saved: RunConfig, ours: RunConfig,
                 by_value: tuple[str, ...]) -> tuple[list[str], dict]:
  """(refused differences, {flag: [theirs, mine]} of resume-safe ones)."""
  refused, changed = [], {}
  for declared in all_settings():
    theirs = getattr(getattr(saved, declared.section), declared.field)
    mine = getattr(getattr(ours, declared.section), declared.field)
    if theirs == mine:
      continue
    if declared.resume_safe and declared.field not in by_value:
      resolved_here = declared.field == "mixed_precision" and mine == "auto"
      if declared.field not in _LOGISTICS and not resolved_here:
        changed[declared.flag] = [theirs, mine]
      continue
    refused.append(f"--{declared.flag}={_shown(theirs)} there, "
                   f"{_shown(mine)} here")
  return refused, changed


def _refuse(model_dir: str, differences: list[str]) -> None:
  listed = "; ".join(differences[:_MAX_LISTED])
  more = len(differences) - _MAX_LISTED
  if more > 0:
    listed += f"; and {more} more"
  raise CheckpointMismatchError(
      f"--model_dir={quoted(model_dir)}: holds a run trained with other "
      f"settings ({listed}); resume it with its own settings (its flags.txt), "
      "pass another --model_dir, or start a new run from its weights with "
      f"--init_from={quoted(model_dir)}")


def check_settings(model_dir: str, config: RunConfig,
                   has_checkpoint: bool) -> dict:
  """Refuses to resume a run with settings that change what it trains.

  Args:
    model_dir: The run directory.
    config: This run's settings.
    has_checkpoint: The directory holds a checkpoint (else nothing is
      resumed and nothing is checked).

  Returns:
    The resume-safe settings that change how the run goes on, as
    {flag: [the run's value, this run's]} (`record_changes` keeps them).

  Raises:
    CheckpointMismatchError: Naming each setting that differs from
      `config.json` and is not resume-safe.
  """
  if not has_checkpoint or not files.gfile.exists(
      files.join(model_dir, run_dir.CONFIG_JSON)):
    return {}
  saved = run_dir.read_run_config(model_dir)
  by_value = () if files.gfile.exists(files.join(model_dir, DATA_JSON)) else (
      _SOURCE_SETTINGS)
  refused, changed = _differences(saved, config, by_value)
  if refused:
    _refuse(model_dir, refused)
  return changed


def describe_changes(changed: dict) -> str:
  """One line for the changes `check_settings` found ('' for none)."""
  if not changed:
    return ""
  return "resumed with changed settings: " + "; ".join(
      f"--{flag}={_shown(theirs)} until now, {_shown(mine)} from here"
      for flag, (theirs, mine) in changed.items())


def record_changes(model_dir: str, step: int, changed: dict) -> None:
  """Appends the step and the changes to `settings_history.jsonl`, so the
  run directory tells what each stretch of steps was trained with (its
  `config.json` holds the settings in force now)."""
  if changed:
    files.append_line(files.join(model_dir, HISTORY_JSONL), json.dumps(
        {"step": int(step), "changed": changed}, sort_keys=True))


def data_fingerprint(train_count: int, test_count: int, image_shape: tuple,
                     classes: int, train_mean: np.ndarray) -> dict:
  """What identifies a run's data, whatever path it was read from."""
  digest = hashlib.sha256(np.ascontiguousarray(
      train_mean, np.float32).tobytes()).hexdigest()[:16]
  return {"train_examples": int(train_count), "test_examples": int(test_count),
          "image_shape": [int(d) for d in image_shape],
          "classes": int(classes), "train_pixel_mean_sha256": digest}


def check_data(model_dir: str, fingerprint: dict, source: str,
               has_checkpoint: bool, write: bool) -> None:
  """Refuses to resume on other data; records the data of a new run.

  Args:
    model_dir: The run directory.
    fingerprint: This run's data (`data_fingerprint`).
    source: Where this run's data was read from (for the message).
    has_checkpoint: A run is being resumed.
    write: Record the fingerprint when the run has none (the chief).

  Raises:
    UserError: If the run was trained on data with another fingerprint.
  """
  path = files.join(model_dir, DATA_JSON)
  saved: Optional[dict] = None
  if has_checkpoint and files.gfile.exists(path):
    try:
      saved = json.loads(files.read_text(path))
    except (tf.errors.OpError, ValueError):
      saved = None  # Unreadable: rewritten below from this run's data.
  if saved is not None and saved != fingerprint:
    differences = [f"{key} {_shown(saved.get(key))} there, "
                   f"{_shown(value)} here"
                   for key, value in fingerprint.items()
                   if saved.get(key) != value]
    raise UserError(
        f"--model_dir={quoted(model_dir)}: holds a run trained on other data "
        f"than {quoted(source)} ({'; '.join(differences)}); pass the data it "
        "was trained on, another --model_dir, or --init_from="
        f"{quoted(model_dir)} to start a new run from its weights")
  if write and saved != fingerprint:
    files.write_atomically(path, json.dumps(fingerprint, indent=2) + "\n")
