"""Mixed-precision policies: resolving `auto`, and building models under one.

The model computes in the policy's dtype; the loss, the KL term and the
decoder's final logits are float32 (see `engine.elbo` and the builders'
`dtype="float32"` output layers), and variables stay float32, so checkpoints
restore across policies. float16 needs loss scaling (`steps.Trainer`).
"""

from __future__ import annotations

import contextlib
import os

import keras
from absl import logging
import tensorflow as tf

from engine.errors import UserError


def _cpu_has_fast_bfloat16() -> bool:
  """AVX512-BF16 or AMX: what makes bfloat16 matmuls fast on a CPU."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = f.read()
  except OSError:
    return False
  return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve(name: str, allow_slow: bool = False) -> str:
  """The Keras policy name for `--mixed_precision=name`.

  `auto`: bfloat16 on TPUs and on CPUs with AVX512-BF16/AMX, float16 on GPUs
  of compute capability 7.0 or more, float32 otherwise.

  Args:
    name: The flag's value.
    allow_slow: Run mixed_float16 without a GPU (with a warning) instead of
      refusing it.

  Raises:
    UserError: For mixed_float16 without a GPU, unless `allow_slow`.
  """
  if name != "auto":
    if name == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
      if not allow_slow:
        raise UserError(
            "--mixed_precision=mixed_float16: no GPU here, and float16 is "
            "emulated on a CPU (~100x slower); use --mixed_precision="
            "mixed_bfloat16 or float32, or pass --allow_slow")
      logging.warning(
          "--mixed_precision=mixed_float16 on a CPU: float16 is emulated and "
          "runs ~100x slower here; use --mixed_precision=mixed_bfloat16 (or "
          "float32)")
    return name
  if tf.config.list_logical_devices("TPU"):
    return "mixed_bfloat16"
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    capability = tf.config.experimental.get_device_details(gpus[0]).get(
        "compute_capability", (0, 0))
    return "mixed_float16" if tuple(capability) >= (7, 0) else "float32"
  if os.environ.get("VAE_ENGINE_ASSUME_FAST_BF16") == "1" or (
      _cpu_has_fast_bfloat16()):
    return "mixed_bfloat16"
  return "float32"


@contextlib.contextmanager
def policy_scope(name: str):
  """Sets the global Keras dtype policy while models are built, then restores
  it: layers keep the policy they were built with."""
  previous = keras.mixed_precision.dtype_policy()
  keras.mixed_precision.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_dtype_policy(previous)
