"""Running sums that each replica adds to alone, summed across replicas when
read: how compiled loops accumulate metrics without waiting for the host."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


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

  def read_and_reset(self) -> dict[str, np.ndarray]:
    """The sums over all replicas since the last reset; then zeroes them."""
    out = {name: v.read_value().numpy() for name, v in self.values.items()}
    for v in self.values.values():
      v.assign(tf.zeros_like(v))
    return out
