"""What the compiled training loop accumulates, guards and returns.

`LossSums` add each step's loss terms on the device (ON_READ sums: a step never
waits for the host); `NonFiniteState` records what the non-finite guard saw;
`LoopOutputs` is what one compiled call hands back to the controller.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from engine import replica_sums

METRIC_NAMES = ("loss", "reconstruction", "kl", "elbo")
# What the non-finite check looks at, in this order.
CHECKED_TERMS = ("reconstruction", "kl", "gradients")


@dataclasses.dataclass(frozen=True)
class LoopOutputs:
  """What one compiled training call returns (`Trainer.train`).

  Attributes:
    step: The global step after the call.
    steps: Steps the call ran (fewer than asked if the guard stopped it).
    sums: Loss terms (`METRIC_NAMES`) summed over the examples trained.
    examples: Examples trained (a skipped step's are not counted).
    seconds: Wall time of the call, the span `examples` took.
    stopped: The non-finite guard ended the loop (see `NonFiniteState`).
    skipped_steps: Steps skipped so far in this process (`--nan_policy`).
  """

  step: int
  steps: int
  sums: dict
  examples: float
  seconds: float
  stopped: bool
  skipped_steps: int


class LossSums:
  """Per-replica running sums of loss terms and of the examples they cover."""

  def __init__(self, names):
    self.names = tuple(names)
    self.sums = replica_sums.ReplicaSums(
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


def _replica_local(name, value, dtype):
  """A variable each replica updates alone; reads return the first replica's
  (all replicas hold the same value: it is computed from all-reduced data)."""
  return tf.Variable(value, dtype=dtype, trainable=False, name=name,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class NonFiniteState:
  """What the non-finite guard has seen since the run (process) started.

  Attributes:
    stopped: The loop ended early because of non-finite steps.
    first_bad_step: Global step of the first non-finite step (-1: none).
    bad_terms: Names from `CHECKED_TERMS` that were non-finite at the step
      that stopped the loop (or the latest bad step).
    skipped_steps: Steps whose update was skipped.
    consecutive_skips: Bad steps in a row, up to the latest step.
  """

  def __init__(self):
    self.stopped = _replica_local("nan_stopped", False, tf.bool)
    self.first_bad_step = _replica_local("nan_first_step", -1, tf.int64)
    self.last_bad_step = _replica_local("nan_last_step", -1, tf.int64)
    self.bad_flags = _replica_local("nan_terms", [0.0] * len(CHECKED_TERMS),
                                    tf.float32)
    self.skipped_steps = _replica_local("nan_skipped", 0, tf.int64)
    self.consecutive_skips = _replica_local("nan_consecutive", 0, tf.int64)

  def bad_terms(self) -> list[str]:
    flags = self.bad_flags.read_value().numpy()
    return [name for name, flag in zip(CHECKED_TERMS, flags) if flag > 0]
