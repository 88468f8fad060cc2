"""Builds the tf.distribute strategy a run asks for."""

from __future__ import annotations

import tensorflow as tf

from engine.errors import UserError


def make_strategy(name: str) -> tf.distribute.Strategy:
  """Returns the strategy called `name`.

  Args:
    name: `default` (no distribution), `one_device` (the first GPU, else the
      CPU) or `mirrored` (all local GPUs, else the CPU devices).

  Raises:
    UserError: For an unknown name.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = ([d.name for d in gpus] if gpus else
               [d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.MirroredStrategy(devices)
  raise UserError(f"--strategy={name}: unknown strategy")
