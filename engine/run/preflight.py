"""What a run can know is wrong before it trains, checked in one place.

`build` calls these before the first step, so a bad path, a disk without
room for a checkpoint, an export that would replace someone else's files or
a model that cannot fit in memory ends the run at once with one `error:`
line (`errors.UserError`), instead of after hours of training:

* directories (`--model_dir`, `--export_dir`): exist or can be created, are
  directories, can be written (`writable_directory`), and have room for what
  the run will write there (`check_free_space`);
* the export's version directory: absent, or an export this engine wrote
  (`export.check_replaceable`, called here and again when exporting);
* memory: the model's parameters, their gradients and optimizer slots, and
  the activations of one batch, estimated from a build that allocates
  nothing, must fit beside the dataset (`engine.run.memory`, which checks
  the same before the data is loaded too).
"""

from __future__ import annotations

import os
import re
import socket
import shutil
from typing import Optional

import tensorflow as tf

from engine.config import RunConfig
from engine.data import indexed
from engine.errors import UserError, quoted, reason, shorten
from engine.io import files
from engine.run import memory
from engine.run.memory import (Footprint,  # noqa: F401
                               check_before_loading, model_footprint)
from engine.serving import export


def writable_directory(flag: str, path: str) -> None:
  """Creates `path` if needed and checks a file can be written in it.

  Raises:
    UserError: Naming the flag and the OS's reason (a file in the way, a
      read-only file system, no permission).
  """
  if files.gfile.exists(path) and not files.gfile.isdir(path):
    raise UserError(f"--{flag}={quoted(path)}: not writable (a file is "
                    "there, not a directory); pass a directory")
  try:
    files.gfile.makedirs(path)
    probe = files.join(path, f".write-probe-{os.getpid()}")
    with files.gfile.GFile(probe, "w") as f:
      f.write("ok")
    files.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as e:
    raise UserError(f"--{flag}={quoted(path)}: not writable ({reason(e)}); "
                    "pass a directory this process can write") from None


def free_bytes(path: str) -> Optional[int]:
  """Free space on the file system that holds (or would hold) `path`; None
  where it cannot be known (non-local file systems)."""
  if not files.is_local(path):
    return None
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def check_free_space(flag: str, path: str, needed: int, what: str) -> None:
  """Raises a UserError unless `needed` bytes fit where `path` is."""
  free = free_bytes(path)
  if free is not None and free < needed:
    raise UserError(f"--{flag}={quoted(path)}: {_size(free)} free, but "
                    f"{what} needs about {_size(needed)} (No space left on "
                    "device); free some space or choose another directory")


def _size(count: int) -> str:
  for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if count >= scale:
      return f"{count / scale:.1f} {unit}"
  return f"{count} bytes"


def _longest_run_files(last_step: int) -> tuple[str, ...]:
  """The longest names a run writes under its model directory."""
  return (f"train/events.out.tfevents.{'9' * 10}.{socket.gethostname()}."
          f"{os.getpid()}.{'9' * 8}.v2",
          f"best/ckpt-{last_step}_temp/part-00000-of-00001.data-00000-of-"
          "00001",
          f"ckpt-{last_step}_temp/part-00000-of-00001.data-00000-of-00001",
          f"eval-{last_step}-k5000.json.vae-engine-tmp-0123abcd")


def check_path_room(flag: str, path: str, names: tuple[str, ...]) -> None:
  """Raises a UserError if a file the run will write under `path` would
  have a name longer than the file system allows (PATH_MAX for the whole
  path, NAME_MAX for each part), which would otherwise fail only when it is
  first written, possibly after training."""
  if not files.is_local(path):
    return
  path = os.path.abspath(path)
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:
    path_max = os.pathconf(existing, "PC_PATH_MAX")
    name_max = os.pathconf(existing, "PC_NAME_MAX")
  except (OSError, ValueError):
    path_max, name_max = 4096, 255
  # TensorFlow writes its files under temporary names a little longer
  # still (`<name>.tempstate<20 digits>`).
  names = tuple(name + ".tempstate" + "9" * 20 for name in names)
  longest = max((os.path.join(path, name) for name in names),
                key=lambda p: len(os.fsencode(p)))
  too_long_part = next((part for part in longest.split(os.sep)
                        if len(os.fsencode(part)) > name_max), None)
  if too_long_part is not None:
    raise UserError(
        f"--{flag}: a part of the path is {len(os.fsencode(too_long_part))} "
        f"bytes long, over the file system's {name_max}; pass a shorter "
        "path")
  if len(os.fsencode(longest)) >= path_max:
    raise UserError(
        f"--{flag}: {len(os.fsencode(path))} bytes long, and the run writes "
        f"files {len(os.fsencode(longest)) - len(os.fsencode(path))} bytes "
        f"deeper (e.g. {names[0].split('/')[0]}/...): over the file system's "
        f"limit of {path_max - 1} bytes for a path; pass a shorter --{flag}")


def check_run(config: RunConfig, create, data, strategy, is_chief: bool,
              last_step: int) -> None:
  """What can be known to fail before the first step (`engine.run.preflight`):
  the model takes the images and fits in memory beside them, and the model
  and export directories have room for a checkpoint and an export, which
  may only replace an export of this engine's.

  Raises:
    UserError: Naming the flag, with the sizes involved.
  """
  train = config.train
  try:
    footprint = model_footprint(create)
  except ValueError as e:
    # The builder's own words (its way to refuse images it cannot take), or
    # Keras's: either way the reason, without Keras's terminal colours.
    words = shorten(re.sub(r"\x1b\[[0-9;]*m", "", reason(e)))
    raise UserError(f"--model={config.model.name}: building it for "
                    f"{quoted(data.source)}'s images of shape "
                    f"{data.image_shape} failed: {words}") from None
  slots = memory.optimizer_slots(config)
  in_memory = not isinstance(data.train_images, indexed.IndexedImages)
  labels = data.train_labels.nbytes + data.test_labels.nbytes
  memory.check(config, footprint, strategy, image_shape=data.image_shape,
               data_bytes=data.train_images.nbytes + data.test_images.nbytes
               + (labels if in_memory else 0),
               examples=len(data.train_labels) + len(data.test_labels),
               data_in_memory=in_memory)
  check_free_space("model_dir", train.model_dir,
                   footprint.checkpoint_bytes(slots), "a checkpoint")
  check_path_room("model_dir", train.model_dir, _longest_run_files(last_step))
  if train.export_dir and is_chief:
    check_free_space("export_dir", train.export_dir,
                     footprint.export_bytes(), "the export")
    check_path_room("export_dir", train.export_dir, (
        f".tmp-{last_step}-0123abcd/variables/"
        "variables.data-00000-of-00001",
        f"best/.tmp-{last_step}-0123abcd/assets.extra/"
        "tf_serving_warmup_requests.vae-engine-tmp-0123abcd"))
    export.check_replaceable(train.export_dir, last_step)
