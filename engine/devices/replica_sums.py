"""Running sums that each replica adds to alone, summed across replicas when
read: how compiled loops accumulate metrics without waiting for the host.

`ReplicaSums` are named ON_READ variables; `LossSums` add a batch's
per-example loss terms (weighted: padding rows count 0) and return sums or
means per example.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def weighted_sum(values: tf.Tensor, weights: tf.Tensor,
                 dtype=tf.float64) -> tf.Tensor:
  """sum_i weights[i] * values[i] over the batch axis, in `dtype`.

  A where, not a product: a row of weight 0 (the padding of a last global
  batch) never reaches the sum, even if its value is not finite.
  """
  values = tf.cast(values, dtype)
  weights = tf.cast(weights, dtype)
  mask = tf.reshape(weights > 0, [-1] + [1] * (values.shape.rank - 1))
  scale = tf.reshape(weights, tf.shape(mask))
  return tf.reduce_sum(tf.where(mask, scale * values, 0.0), axis=0)


class ReplicaSums:
  """Named ON_READ sums (create inside the strategy's scope).

  Args:
    shapes: {name: shape} of each sum ([] for a scalar).
    dtype: The sums' dtype (float64 where many terms are added).
    prefix: Prefixes the variables' names.
  """

  def __init__(self, shapes: dict, dtype=tf.float32, prefix: str = "sum"):
    self.dtype = dtype
    self.values = {
        name: tf.Variable(tf.zeros(shape, dtype), trainable=False,
                          name=f"{prefix}_{name}",
                          synchronization=tf.VariableSynchronization.ON_READ,
                          aggregation=tf.VariableAggregation.SUM)
        for name, shape in shapes.items()}

  def add(self, **updates) -> None:
    """Adds to this replica's copy of each named sum."""
    for name, value in updates.items():
      self.values[name].assign_add(tf.cast(value, self.dtype))

  def read(self) -> dict[str, np.ndarray]:
    """The sums over all replicas since the last reset."""
    return {name: v.read_value().numpy() for name, v in self.values.items()}

  def read_and_reset(self) -> dict[str, np.ndarray]:
    """The sums over all replicas since the last reset; then zeroes them."""
    out = {name: v.read_value().numpy() for name, v in self.values.items()}
    for v in self.values.values():
      v.assign(tf.zeros_like(v))
    return out


class LossSums:
  """Per-replica running sums of loss terms and of the examples they cover."""

  def __init__(self, names):
    self.names = tuple(names)
    self.sums = ReplicaSums(
        {name: [] for name in (*self.names, "count")})

  def add(self, per_example: dict[str, tf.Tensor], keep=True,
          weights=None) -> None:
    """Adds a batch's terms.

    Args:
      per_example: float32 [B] tensors, one per name.
      keep: False (a skipped step) adds nothing.
      weights: float32 [B] per-example weights (0 for padding rows); None
        counts every example once.
    """
    if weights is None:
      count = tf.cast(tf.shape(per_example[self.names[0]])[0], tf.float32)
    else:
      count = tf.reduce_sum(weights)
    totals = {}
    for name in self.names:
      values = per_example[name]
      if weights is not None:
        # A where, not a product: a padding row's term never reaches the
        # sum, even if it is not finite.
        values = tf.where(weights > 0, weights * values, 0.0)
      totals[name] = tf.where(keep, tf.reduce_sum(values), 0.0)
    self.sums.add(count=tf.where(keep, count, 0.0), **totals)

  def sums_and_reset(self) -> tuple[dict[str, float], float]:
    """(sums per term, examples) since the last reset; then zeroes them."""
    sums = {name: float(v) for name, v in self.sums.read_and_reset().items()}
    return {name: sums[name] for name in self.names}, sums["count"]

  def result_and_reset(self) -> dict[str, float]:
    """Means per example since the last reset, then zeroes the sums."""
    sums, count = self.sums_and_reset()
    means = {name: total / max(count, 1.0) for name, total in sums.items()}
    means["examples"] = count
    return means
