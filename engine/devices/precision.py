"""Mixed-precision policies: resolving `auto`, and building models under one.

The model computes in the policy's dtype; the loss, the KL term and the
decoder's final logits are float32 (see `engine.objectives.elbo` and the builders'
`dtype="float32"` output layers), and variables stay float32, so checkpoints
restore across policies. float16 needs loss scaling (`steps.Trainer`).
"""

from __future__ import annotations

import contextlib
import dataclasses

import keras
from absl import logging
import tensorflow as tf

from engine.errors import UserError


POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclasses.dataclass(frozen=True)
class Hardware:
  """What `auto` looks at.

  Attributes:
    tpu: A TPU is attached.
    gpu_capabilities: CUDA compute capability (major, minor) of each GPU.
    cpu_flags: The CPU's feature flags, as /proc/cpuinfo names them.
  """

  tpu: bool = False
  gpu_capabilities: tuple = ()
  cpu_flags: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class Choice:
  """A resolved policy and, for `auto`, why it was chosen."""

  policy: str
  reason: str = ""

  def describe(self) -> str:
    return f"{self.policy} (auto: {self.reason})" if self.reason else (
        self.policy)


def _cpu_flags() -> frozenset:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def detect_hardware() -> Hardware:
  """The accelerators and CPU features of this machine."""
  capabilities = []
  for gpu in tf.config.list_physical_devices("GPU"):
    details = tf.config.experimental.get_device_details(gpu)
    capabilities.append(tuple(details.get("compute_capability", (0, 0))))
  return Hardware(tpu=bool(tf.config.list_logical_devices("TPU")),
                  gpu_capabilities=tuple(capabilities),
                  cpu_flags=_cpu_flags())


def choose(hardware: Hardware) -> Choice:
  """What `--mixed_precision=auto` means on `hardware`: the fastest policy.

  bfloat16 only where it is faster than float32, never merely where it runs:
  - TPU: bfloat16 (its matrix units' native type).
  - GPUs (the slowest one decides): compute capability 8.0+ has bfloat16
    tensor cores as fast as float16's, and bfloat16 needs no loss scaling:
    bfloat16. 7.x has float16 tensor cores only: float16. Older: float32.
  - CPUs: bfloat16 with AMX (tile matmul units, several times float32's
    rate). AVX512-BF16 alone only converts and dots pairs: measured slower
    than float32 (conv 0.65x, dense 0.83x on an Intel Xeon), so float32,
    as everywhere else.
  """
  if hardware.tpu:
    return Choice("mixed_bfloat16", "TPU")
  if hardware.gpu_capabilities:
    capability = min(hardware.gpu_capabilities)
    name = f"GPU compute capability {capability[0]}.{capability[1]}"
    if capability >= (8, 0):
      return Choice("mixed_bfloat16", f"{name}: bfloat16 tensor cores, no "
                    "loss scaling")
    if capability >= (7, 0):
      return Choice("mixed_float16", f"{name}: float16 tensor cores only")
    return Choice("float32", f"{name}: no tensor cores")
  if {"amx_bf16", "amx_tile"} <= hardware.cpu_flags:
    return Choice("mixed_bfloat16", "CPU with AMX-BF16")
  if "avx512_bf16" in hardware.cpu_flags:
    return Choice("float32", "CPU with AVX512-BF16 but no AMX: bfloat16 is "
                  "slower than float32 there")
  return Choice("float32", "CPU without bfloat16 matmul units")


def candidates(hardware: Hardware) -> list[str]:
  """The policies `--mixed_precision=auto` measures here: float32, and each
  reduced precision the hardware has units for (a TPU: bfloat16 only,
  its native type)."""
  if hardware.tpu:
    return ["mixed_bfloat16"]
  found = ["float32"]
  capability = (min(hardware.gpu_capabilities) if hardware.gpu_capabilities
                else None)
  if (capability and capability >= (8, 0)) or (
      not capability and ({"amx_bf16", "avx512_bf16"} & hardware.cpu_flags)):
    found.append("mixed_bfloat16")
  if capability and capability >= (7, 0):
    found.append("mixed_float16")
  return found


def resolve(name: str, allow_slow: bool = False,
            hardware: Hardware | None = None) -> Choice:
  """The Keras policy for `--mixed_precision=name` (see `choose` for auto).

  Args:
    name: The flag's value.
    allow_slow: Run mixed_float16 without a GPU (with a warning) instead of
      refusing it.
    hardware: What to decide for (default: this machine).

  Raises:
    UserError: For mixed_float16 without a GPU, unless `allow_slow`.
  """
  if name == "auto":
    return choose(hardware or detect_hardware())
  if name == "mixed_float16":
    has_gpu = (bool(hardware.gpu_capabilities) if hardware else
               bool(tf.config.list_physical_devices("GPU")))
    if not has_gpu:
      if not allow_slow:
        raise UserError(
            "--mixed_precision=mixed_float16: no GPU here, and float16 is "
            "emulated on a CPU (~100x slower); use --mixed_precision="
            "mixed_bfloat16 or float32, or pass --allow_slow")
      logging.warning(
          "--mixed_precision=mixed_float16 on a CPU: float16 is emulated and "
          "runs ~100x slower here; use --mixed_precision=mixed_bfloat16 (or "
          "float32)")
  return Choice(name)


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
