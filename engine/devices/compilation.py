"""Whether a model's training is compiled with XLA when `--jit_compile` is
unset."""

from __future__ import annotations

import tensorflow as tf

from models.base import VariationalAutoencoder


def xla_by_default(vae: VariationalAutoencoder) -> tuple[bool, str]:
  """What `--jit_compile` unset (auto) means for this model here, and why.

  Also whether the importance-sampled NLL is compiled (a forward pass: XLA
  fuses the decoder's output into the likelihood; on a CPU, convolutions
  again run slower than oneDNN's).

  XLA fuses a step's many small ops and, on one device, runs many steps per
  execution: a large gain for dense models anywhere and for every model on
  a GPU. On a CPU, XLA compiles convolution gradients into slower code than
  oneDNN's kernels (`vae-engine benchmark` measures both), so a model with
  convolutions keeps them.
  """
  if tf.config.list_logical_devices("GPU"):
    return True, "a GPU"
  if vae.has_convolutions:
    return False, "convolutions on a CPU"
  return True, "no convolutions"
