"""The global gradient norm of each step: clipped (`--clip_grad_norm`), too
large to apply (`--skip_grad_norm`), and summed for TensorBoard.

The norm is that of the gradient the optimizer applies: summed over
replicas, unscaled by a float16 loss scale. Under tf.distribute with
clipping or skipping on, each replica all-reduces its gradients first, so
every replica sees the same norm and makes the same decision (the skip is
agreed, as the non-finite guard's is); the reduced gradients are handed to
the optimizer divided by the replica count, since it sums them again.
Without either, only a single device computes the norm (it is free there;
under tf.distribute it would cost an all-reduce per step).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from engine.devices import replica_sums


def _replica_local(name, value, dtype):
  return tf.Variable(value, dtype=dtype, trainable=False, name=name,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class GradientNorms:
  """Clipping, skipping and the running sum of each step's global norm.

  Create it inside the strategy's scope.

  Args:
    clip: Scale a gradient down to this global norm (None: never).
    skip: Do not apply an update whose norm is larger (None: never).
    max_skipped_steps: Skipped updates in a row that stop the loop.
    distributed: The loop runs under a tf.distribute strategy.

  Attributes:
    skipped_steps, consecutive_skips: Updates skipped for their norm (all,
      and in a row up to the latest step).
    last_skipped_norm: The norm of the latest skipped update.
    stopped: `max_skipped_steps` in a row ended the loop.
  """

  def __init__(self, clip: Optional[float], skip: Optional[float],
               max_skipped_steps: int, distributed: bool):
    self.clip, self.skip = clip, skip
    self.max_skipped_steps = max_skipped_steps
    self.measured = bool(clip or skip) or not distributed
    self.distributed = distributed
    self.sums = replica_sums.ReplicaSums({"norm": [], "steps": []},
                                         prefix="grad")
    self.skipped_steps = _replica_local("grad_skipped", 0, tf.int64)
    self.consecutive_skips = _replica_local("grad_consecutive", 0, tf.int64)
    self.last_skipped_norm = _replica_local("grad_last_norm", 0.0,
                                            tf.float32)
    self.stopped = _replica_local("grad_stopped", False, tf.bool)

  def process(self, gradients: list, loss_scale=None):
    """(gradients to apply, their global norm, whether it is too large).

    Args:
      gradients: This replica's gradients (scaled by `loss_scale`).
      loss_scale: The float16 loss scale (None: unscaled).

    Returns:
      The gradients clipped (and, under tf.distribute, reduced and divided
      by the replica count), the norm (None where not measured), and a bool
      tensor (always False without `skip`).
    """
    if not self.measured:
      return gradients, None, tf.constant(False)
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if self.distributed else 1
    if replicas > 1:
      gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
    norm = tf.linalg.global_norm(gradients)
    if loss_scale is not None:
      norm = norm / tf.cast(loss_scale, norm.dtype)
    if self.clip:
      factor = tf.minimum(1.0, self.clip / tf.maximum(norm, 1e-12))
      gradients = [g * tf.cast(factor, g.dtype) for g in gradients]
    if replicas > 1:
      gradients = [g / replicas for g in gradients]
    too_large = (tf.greater(norm, self.skip) if self.skip
                 else tf.constant(False))
    return gradients, norm, too_large

  def record(self, norm, finite, too_large):
    """Notes a step (its norm counted where finite and measured); returns
    whether the loop must stop: `max_skipped_steps` too-large in a row."""
    if norm is None:
      return tf.constant(False)
    counted = tf.logical_and(finite, tf.math.is_finite(norm))
    self.sums.add(norm=tf.where(counted, norm, 0.0),
                  steps=tf.cast(counted, tf.float32))
    skipped = tf.logical_and(finite, too_large)
    consecutive = tf.where(skipped, self.consecutive_skips + 1,
                           tf.constant(0, tf.int64))
    self.consecutive_skips.assign(consecutive)
    self.skipped_steps.assign_add(tf.cast(skipped, tf.int64))
    self.last_skipped_norm.assign(tf.where(skipped, norm,
                                           self.last_skipped_norm))
    stop = consecutive >= self.max_skipped_steps
    self.stopped.assign(stop)
    return stop

  def mean_and_reset(self) -> Optional[float]:
    """The mean norm since the last call (None: none measured)."""
    sums = self.sums.read_and_reset()
    return (float(sums["norm"] / sums["steps"]) if sums["steps"] > 0
            else None)
