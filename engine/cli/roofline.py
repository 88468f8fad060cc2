"""What a machine can do and what a model asks of it: the CPU's name, the
matmul peak in FLOP/s, measured, and the FLOPs one training example costs,
counted from the traced gradient graph (for the benchmarks' fraction of
peak)."""

from __future__ import annotations

import time


# The instruction sets that decide how fast a CPU runs a model (AMX and
# AVX512-BF16 for bfloat16, AVX-512 or only AVX2 for float32).
_NAMED_FEATURES = ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The CPU's model name and the named features it has, from /proc/cpuinfo
  (e.g. `AMD EPYC (avx512_bf16 avx512f avx2)`)."""
  name, features = "unknown", set()
  try:
    with open(cpuinfo) as f:
      for line in f:
        if line.startswith("model name") and name == "unknown":
          name = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not features:
          features = set(line.split(":", 1)[1].split())
  except OSError:
    pass
  named = [feature for feature in _NAMED_FEATURES if feature in features]
  return f"{name} ({' '.join(named)})" if named else name


def matmul_peak_flops(size: int = 2048, repeats: int = 20,
                      dtype: str = "float32") -> float:
  """FLOP/s of a large square matmul in `dtype` on this machine."""
  import tensorflow as tf

  a = tf.cast(tf.random.normal([size, size]), dtype)
  b = tf.cast(tf.random.normal([size, size]), dtype)

  @tf.function
  def run():
    c = a
    for _ in range(repeats):
      c = tf.matmul(c, b) * 1e-3
    return tf.reduce_sum(c)

  run().numpy()
  best = 0.0
  for _ in range(3):
    started = time.perf_counter()
    run().numpy()
    best = max(best, repeats * 2 * size ** 3 / (time.perf_counter() - started))
  return best


def flops_per_example(trainer, batch, batch_size: int) -> float:
  """Forward + backward FLOPs of one example, from the traced gradient graph."""
  import tensorflow as tf

  from absl import logging

  concrete = tf.function(trainer.compute_gradients).get_concrete_function(batch)
  options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
  options["output"] = "none"
  # The v1 profiler logs a deprecation warning per call; it is the only
  # FLOP counter TensorFlow has.
  verbosity, level = logging.get_verbosity(), tf.get_logger().level
  logging.set_verbosity(logging.ERROR)
  tf.get_logger().setLevel("ERROR")
  try:
    profile = tf.compat.v1.profiler.profile(graph=concrete.graph,
                                            options=options)
  finally:
    logging.set_verbosity(verbosity)
    tf.get_logger().setLevel(level)
  return profile.total_float_ops / batch_size
