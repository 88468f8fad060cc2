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
  nothing (`model_footprint`), must fit beside the dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from engine.config import RunConfig
from engine.data import images
from engine.errors import UserError, quoted, reason
from engine.io import files
from engine.serving import export

# Bytes a checkpoint or an export holds beyond its float32 weights (the
# graph, indexes, the object graph), with room to spare.
_FILE_OVERHEAD = 8 << 20
# A run is refused only when the estimate is this close to all the memory it
# may use: the estimate is rough, and a false refusal is worse than a late one.
_MEMORY_FRACTION = 0.9
# Activations kept for the backward pass, their gradients and a workspace.
_ACTIVATION_COPIES = 3


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


@dataclasses.dataclass(frozen=True)
class Footprint:
  """What a model needs, from its shapes alone.

  Attributes:
    parameters: Encoder plus decoder parameters.
    activations_per_example: Floats the layers output for one example.
  """

  parameters: int
  activations_per_example: int

  def checkpoint_bytes(self, optimizer_slots: int) -> int:
    """A checkpoint: float32 weights and optimizer slots."""
    return 4 * self.parameters * (1 + optimizer_slots) + _FILE_OVERHEAD

  def export_bytes(self) -> int:
    return 4 * self.parameters + _FILE_OVERHEAD

  def training_bytes(self, batch_size: int, optimizer_slots: int,
                     replicas: int) -> tuple[int, int]:
    """(parameter bytes, activation bytes) of training on this machine:
    weights, gradients and slots on each local replica, and the
    activations of the global batch."""
    parameter_bytes = 4 * self.parameters * (2 + optimizer_slots) * replicas
    activation_bytes = (4 * _ACTIVATION_COPIES * self.activations_per_example
                        * batch_size)
    return parameter_bytes, activation_bytes


@contextlib.contextmanager
def _without_allocating():
  """Builds Keras layers whose variables have shapes but no values.

  Keras defers initializing variables created in a `StatelessScope` and
  keeps them in a global list, which a later scope would initialize; they
  are dropped from that list here, so nothing ever allocates them.
  """
  from keras.src.backend.common import global_state  # pylint: disable=g-import-not-at-top

  key = "uninitialized_variables"
  before = list(global_state.get_global_attribute(key, [],
                                                  set_to_default=True))
  try:
    with keras.StatelessScope(initialize_variables=False):
      yield
  finally:
    global_state.set_global_attribute(key, before)


def _output_floats(model) -> int:
  """Floats per example of every layer's outputs (nested models included)."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      total += _output_floats(layer)
      continue
    for output in keras.tree.flatten(layer.output):
      total += int(np.prod([d or 1 for d in output.shape[1:]]))
  return total


def model_footprint(create) -> Footprint:
  """The footprint of the model `create()` builds, without allocating it.

  Args:
    create: Builds the `VariationalAutoencoder` (e.g. a `ModelSpec.create`
      with its arguments bound).
  """
  with _without_allocating():
    vae = create()
  return Footprint(sum(vae.count_params()),
                   _output_floats(vae.encoder) + _output_floats(vae.decoder))


def check_memory(footprint: Footprint, *, model: str, image_shape: tuple,
                 batch_size: int, optimizer_slots: int, replicas: int,
                 data_bytes: int,
                 available: Optional[int] = None) -> None:
  """Raises a UserError, with the sizes and the flags that shrink them, if
  training the model would not fit in memory beside the data."""
  available = (images.available_memory_bytes() if available is None
               else available)
  parameter_bytes, activation_bytes = footprint.training_bytes(
      batch_size, optimizer_slots, replicas)
  needed = parameter_bytes + activation_bytes + data_bytes
  if needed <= available * _MEMORY_FRACTION:
    return
  shape = "x".join(str(d) for d in image_shape)
  raise UserError(
      f"--model={model}: training needs about {_size(needed)} of memory for "
      f"{shape} images ({footprint.parameters:,} parameters with their "
      f"gradients and optimizer slots: {_size(parameter_bytes)}; the "
      f"activations of a batch of {batch_size}: {_size(activation_bytes)}; "
      f"the data: {_size(data_bytes)}), more than the {_size(available)} "
      "available; pass a smaller --image_size, --batch_size or --latent_dim")


def _size(count: int) -> str:
  for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if count >= scale:
      return f"{count / scale:.1f} {unit}"
  return f"{count} bytes"


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
    raise UserError(f"--model={config.model.name}: cannot take "
                    f"{quoted(data.source)}'s images of shape "
                    f"{data.image_shape} ({e})") from None
  slots = 2 if train.optimizer in ("adam", "adamw") else 0
  try:
    local_replicas = len(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy has no device list: one.
    local_replicas = 1
  local_batch = (train.batch_size * local_replicas
                 // strategy.num_replicas_in_sync) * config.model.iw_samples
  check_memory(
      footprint, model=config.model.name, image_shape=data.image_shape,
      batch_size=local_batch, optimizer_slots=slots, replicas=local_replicas,
      data_bytes=data.train_images.nbytes + data.test_images.nbytes)
  check_free_space("model_dir", train.model_dir,
                             footprint.checkpoint_bytes(slots), "a checkpoint")
  if train.export_dir and is_chief:
    check_free_space("export_dir", train.export_dir,
                               footprint.export_bytes(), "the export")
    export.check_replaceable(train.export_dir, last_step)
