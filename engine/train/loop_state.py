"""What the compiled training loop guards and returns.

`NonFiniteState` records what the non-finite guard saw; `LoopOutputs` is
what one compiled call hands back to the controller. (Its loss terms are
summed on the device in `replica_sums.LossSums`.)
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf

# What the non-finite check looks at, in this order.
CHECKED_TERMS = ("reconstruction", "kl", "gradients")


@dataclasses.dataclass(frozen=True)
class LoopOutputs:
  """What one compiled training call returns (`Trainer.train`).

  Attributes:
    step: The global step after the call.
    steps: Steps the call ran (fewer than asked if the guard stopped it).
    sums: Loss terms (`elbo.TERMS`) summed over the examples trained.
    examples: Examples trained (a skipped step's are not counted).
    seconds: Wall time of the call, the span `examples` took.
    stopped: The non-finite guard ended the loop (see `NonFiniteState`).
    skipped_steps: Steps skipped so far in this process (`--nan_policy`).
    grad_norm: The mean global gradient norm of the call's applied steps
      (None: not measured; see `gradient_norms`).
    norm_skipped_steps: Updates skipped so far for their norm
      (`--skip_grad_norm`).
    norm_stopped: `--max_skipped_steps` of those in a row ended the loop.
  """

  step: int
  steps: int
  sums: dict
  examples: float
  seconds: float
  stopped: bool
  skipped_steps: int
  grad_norm: Optional[float] = None
  norm_skipped_steps: int = 0
  norm_stopped: bool = False


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

  def flags(self, terms: dict, gradients=None) -> tf.Tensor:
    """1.0 per `CHECKED_TERMS` entry that is not finite on this replica
    (gradients None: not checked)."""

    def bad(tensors):
      finite = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors
                if t is not None]
      return tf.cast(tf.logical_not(tf.reduce_all(finite)), tf.float32)

    gradient_flag = tf.constant(0.0) if gradients is None else bad(gradients)
    return tf.stack([bad([terms["reconstruction"]]), bad([terms["kl"]]),
                     gradient_flag])

  def record(self, flags, finite, global_step, limit: int):
    """Notes a step's outcome (`flags`, agreed by all replicas); returns
    whether the loop must stop: `limit` bad steps in a row."""
    step = tf.cast(global_step, tf.int64)
    consecutive = tf.where(finite, tf.constant(0, tf.int64),
                           self.consecutive_skips + 1)
    self.consecutive_skips.assign(consecutive)
    self.skipped_steps.assign_add(tf.where(finite, tf.constant(0, tf.int64),
                                           tf.constant(1, tf.int64)))
    self.first_bad_step.assign(tf.where(
        tf.logical_and(tf.logical_not(finite), self.first_bad_step < 0),
        step, self.first_bad_step))
    self.last_bad_step.assign(tf.where(finite, self.last_bad_step, step))
    self.bad_flags.assign(tf.where(finite, self.bad_flags, flags))
    stop = consecutive >= limit
    self.stopped.assign(stop)
    return stop

  def bad_terms(self) -> list[str]:
    flags = self.bad_flags.read_value().numpy()
    return [name for name, flag in zip(CHECKED_TERMS, flags) if flag > 0]
