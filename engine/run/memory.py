"""Whether a run fits in memory, known from shapes alone.

Training holds three things: the dataset (uint8 images as --image_size and
--channels make them, one copy, and int64 labels; only the labels when the
images are read by index from converted shards), the model's float32
parameters with their gradients, optimizer slots (Adam: two) and moving
average (--ema_decay) on each local replica, and the activations of one
batch (every layer's output, kept for the backward pass, with their
gradients and a workspace: at least the input, the reconstruction and their
gradients).

`check_before_loading` estimates the three together before anything is
decoded, resized or built (the data from its headers, `engine.data.extent`;
the model from a build that allocates nothing, `model_footprint`), and a
run over the memory the process may use (MemAvailable or its cgroup limit)
is refused in one line giving each part and the flags that shrink it.
`preflight.check_run` checks again once the data is loaded, with its exact
labels (a conditional model's classes: counted here as the fewest, two).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import keras

import models
from models.base import output_floats
from engine.config import RunConfig
from engine.data import extent as extent_lib
from engine.data import images
from engine.errors import UserError, quoted

# A run is refused only when the estimate is this close to all the memory it
# may use: the estimate is rough, and a false refusal is worse than a late one.
MEMORY_FRACTION = 0.9
# Activations kept for the backward pass, their gradients and a workspace.
_ACTIVATION_COPIES = 3
# Bytes a checkpoint or an export holds beyond its float32 weights (the
# graph, indexes, the object graph), with room to spare.
_FILE_OVERHEAD = 8 << 20


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


def model_footprint(create) -> Footprint:
  """The footprint of the model `create()` builds, without allocating it.

  Args:
    create: Builds the `VariationalAutoencoder` (e.g. a `ModelSpec.create`
      with its arguments bound).
  """
  with _without_allocating():
    vae = create()
  return Footprint(sum(vae.count_params()),
                   output_floats(vae.encoder) + output_floats(vae.decoder))


def optimizer_slots(config: RunConfig) -> int:
  """Float32 copies of the parameters beside the weights and gradients:
  Adam's two moments, and the moving average of --ema_decay."""
  train = config.train
  return (2 if train.optimizer in ("adam", "adamw") else 0) + (
      1 if train.ema_decay else 0)


def local_batch(config: RunConfig, strategy) -> tuple[int, int]:
  """(examples a step computes on this machine, local replicas)."""
  try:
    replicas = len(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy has no device list: one.
    replicas = 1
  return (config.train.batch_size * replicas
          // strategy.num_replicas_in_sync * config.model.iw_samples,
          replicas)


def check(config: RunConfig, footprint: Footprint, strategy, *,
          image_shape: tuple, data_bytes: int, examples: int,
          data_in_memory: bool, available: Optional[int] = None) -> None:
  """Raises a UserError, giving each part's size and the flags that shrink
  it, if the data, the model and a batch's activations do not fit together
  in `available` bytes (default: what this process may use)."""
  available = (images.available_memory_bytes() if available is None
               else available)
  batch, replicas = local_batch(config, strategy)
  slots = optimizer_slots(config)
  model_bytes, activation_bytes = footprint.training_bytes(batch, slots,
                                                           replicas)
  needed = data_bytes + model_bytes + activation_bytes
  if needed <= available * MEMORY_FRACTION:
    return
  data, model = config.data, config.model
  largest = max((data_bytes, "data"), (model_bytes, "model"),
                (activation_bytes, "batch"))[1]
  lead = {"data": (f"--data_dir={quoted(data.data_dir)}" if data.data_dir
                   else f"--dataset={data.dataset}"),
          "model": f"--model={model.name}",
          "batch": f"--batch_size={config.train.batch_size}"}[largest]
  held = "uint8 images and labels" if data_in_memory else (
      "labels; the images are read from disk")
  copies = ["their gradients"] + (
      ["Adam's 2 slots"] if config.train.optimizer in ("adam", "adamw")
      else []) + (["a moving average"] if config.train.ema_decay else [])
  copies = ", ".join(copies[:-1]) + " and " + copies[-1] if len(
      copies) > 1 else copies[0]
  shards = (", or --data_dir converted to shards (vae-engine "
            "convert_dataset) to read the images from disk"
            if data_in_memory else "")
  raise UserError(
      f"{lead}: training on {'x'.join(map(str, image_shape))} images needs "
      f"about {_size(needed)} of memory, more than the {_size(available)} "
      f"this process may use: the data {_size(data_bytes)} ({examples:,} "
      f"examples, {held}), the model {_size(model_bytes)} "
      f"(--model={model.name}: {footprint.parameters:,} parameters with "
      f"{copies}{f', on {replicas} replicas' if replicas > 1 else ''}), the "
      f"activations of a batch of {batch} {_size(activation_bytes)}; pass a "
      "smaller --image_size, --max_train_examples or --batch_size, a "
      f"smaller --model or --latent_dim{shards}")


def check_before_loading(config: RunConfig, strategy, seed: int = 0) -> None:
  """The whole run's memory (`check`), from the data's headers and a model
  built without allocating, before anything is loaded; nothing where the
  data's size cannot be known unread (tensorflow-datasets).

  Raises:
    UserError: For a run that cannot fit (or data whose headers are wrong).
  """
  planned = extent_lib.estimate(config.data, seed)
  if planned is None:
    return
  spec = models.get(config.model.name)
  try:
    footprint = model_footprint(lambda: spec.create(
        planned.image_shape, config.model.latent_dim,
        learned_scale=config.model.learned_scale,
        num_classes=2 if config.model.conditional else 0))
  except ValueError:  # The model cannot take them: `check_run` says so.
    return
  check(config, footprint, strategy, image_shape=planned.image_shape,
        data_bytes=planned.held_bytes, examples=planned.examples,
        data_in_memory=planned.in_memory)
  if planned.in_memory:
    images.check_fits_in_memory(planned.source, planned.examples,
                                planned.image_shape)


def _size(count: int) -> str:
  for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
    if count >= scale:
      return f"{count / scale:.1f} {unit}"
  return f"{count} bytes"
