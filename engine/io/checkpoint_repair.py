"""Recovering a model directory that a killed or damaged run left behind.

Candidates are found by their files, not through the `checkpoint` state
file, which may itself be damaged. Half-written saves are dropped only when
provably the engine's: before each save the saver notes the directory
TensorFlow will write (`ckpt-N_temp/`) in a journal (`SAVE_JOURNAL`), and a
killed save's directory is removed only if the journal names it and it holds
nothing but TensorFlow's shard files; any other `*_temp` name is left alone
and reported. An unreadable checkpoint is moved into `<model_dir>/corrupt/`
with a warning naming it; a damaged state file is named and rewritten from
the checkpoints on disk.
"""

from __future__ import annotations

import os
import re

from absl import logging
import tensorflow as tf

from engine.io import files

PREFIX = "ckpt"
CORRUPT_DIR = "corrupt"
# The saves under way in a directory: the temporary directory of each.
SAVE_JOURNAL = ".vae-engine-saving"
# What TensorFlow writes into a save's temporary directory: each shard file,
# first under a `.tempstate<N>` name that a kill mid-write leaves behind.
_SHARD_FILE = re.compile(
    r"part-\d+-of-\d+\.(index|data-\d+-of-\d+)(\.tempstate\d+)?")
# A line of the `checkpoint` state file (a CheckpointState text proto).
_STATE_LINE = re.compile(
    r'(model_checkpoint_path|all_model_checkpoint_paths): "[^"\n]*"|'
    r'(all_model_checkpoint_timestamps|last_preserved_timestamp): [0-9.e+-]+')


def checkpoints_on_disk(directory: str) -> list[str]:
  """Checkpoint prefixes in `directory` by their index files, newest first."""
  found = []
  for index in files.gfile.glob(files.join(directory, f"{PREFIX}-*.index")):
    match = re.fullmatch(rf"{PREFIX}-(\d+)\.index", os.path.basename(index))
    if match:
      found.append((int(match.group(1)), index[:-len(".index")]))
  return [path for _, path in sorted(found, reverse=True)]


def temporary_dir(step: int) -> str:
  """The directory TensorFlow writes a save of `step` into, then merges
  into place and removes."""
  return f"{PREFIX}-{step}_temp"


def note_save(directory: str, step: int) -> None:
  """Journals, before TensorFlow writes it, the save of `step`."""
  files.write_atomically(files.join(directory, SAVE_JOURNAL),
                         temporary_dir(step) + "\n")


def save_done(directory: str) -> None:
  """Clears the journal once a save is complete."""
  try:
    files.gfile.remove(files.join(directory, SAVE_JOURNAL))
  except tf.errors.NotFoundError:
    pass


def _holds_only_shards(path: str) -> bool:
  try:
    return all(_SHARD_FILE.fullmatch(name.rstrip("/"))
               for name in files.gfile.listdir(path))
  except tf.errors.OpError:
    return False


def remove_half_written(directory: str) -> list[str]:
  """Drops a killed save's temporary directory when the journal proves it
  is the engine's, and reports what looks like one but is not.

  Returns:
    The `*_temp` paths left alone (not journalled, or holding files that
    TensorFlow does not write there).
  """
  journal = files.join(directory, SAVE_JOURNAL)
  journalled = set()
  if files.gfile.exists(journal):
    journalled = set(files.read_text(journal).split())
  left = []
  for stale in sorted(files.gfile.glob(files.join(directory,
                                                  f"{PREFIX}-*_temp"))):
    name = os.path.basename(stale.rstrip("/"))
    if name in journalled and _holds_only_shards(stale):
      files.remove_tree(stale)
    else:
      left.append(stale)
  save_done(directory)
  if left:
    logging.warning(
        "left alone in %s: %s (named like a checkpoint's temporary "
        "directory, but not one this engine was writing)", directory,
        ", ".join(os.path.basename(p) for p in left))
  return left


def state_file_readable(directory: str) -> bool:
  """Whether the `checkpoint` state file is absent or reads as the text
  proto TensorFlow writes (checked here: TF's own reader logs a parse error
  and silently ignores such a file)."""
  path = files.join(directory, "checkpoint")
  if not files.gfile.exists(path):
    return True
  try:
    text = files.read_text(path)
  except (UnicodeDecodeError, tf.errors.OpError):
    return False
  lines = [line for line in text.splitlines() if line.strip()]
  return bool(lines) and all(_STATE_LINE.fullmatch(line) for line in lines)


def _state_proto(latest: str, paths: list[str]) -> str:
  """The `checkpoint` state file, with paths relative to its directory as
  TensorFlow writes them."""
  lines = [f'model_checkpoint_path: "{os.path.basename(latest)}"']
  lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"'
            for p in paths]
  return "\n".join(lines) + "\n"


def set_aside(directory: str, unreadable: list, restored: str,
              candidates: list[str], state_damaged: bool,
              repair: bool) -> None:
  """Warns about skipped checkpoints and a damaged state file; with
  `repair` (the chief), moves the checkpoints aside and rewrites the state
  file.

  Args:
    directory: The model directory.
    unreadable: (prefix, why) of each checkpoint that could not be read.
    restored: The checkpoint restored instead.
    candidates: Every checkpoint on disk.
    state_damaged: The state file is unreadable.
    repair: Change the directory (only the chief may).
  """
  for path, why in unreadable:
    where = ""
    if repair:
      quarantine = files.join(directory, CORRUPT_DIR)
      files.gfile.makedirs(quarantine)
      for part in files.gfile.glob(path + ".*"):
        files.gfile.rename(part, files.join(quarantine,
                                            os.path.basename(part)),
                           overwrite=True)
      where = f"; moved to {quarantine}/"
    logging.warning("checkpoint %s is unreadable (%s): resuming from %s "
                    "instead%s", path, why, restored, where)
  state = files.join(directory, "checkpoint")
  if state_damaged:
    logging.warning("the checkpoint state file %s is unreadable: ignored%s",
                    state, "; rewritten from the checkpoints on disk"
                    if repair else "")
  if repair:
    # Rewritten atomically, so that the manager and tools see only readable
    # checkpoints.
    bad = {path for path, _ in unreadable}
    good = sorted((p for p in candidates if p not in bad),
                  key=lambda p: int(p.rsplit("-", 1)[1]))
    files.write_atomically(state, _state_proto(restored, good))
