"""The global gradient norm of each step: clipped (`--clip_grad_norm`), too
large to apply (`--skip_grad_norm`; the step guard, `step_guard`, skips it),
and summed for TensorBoard.

The norm is that of the gradient the optimizer applies: summed over
replicas, unscaled by a float16 loss scale. Under tf.distribute with
clipping or skipping on, each replica all-reduces its gradients first, so
every replica sees the same norm and makes the same decision (the skip is
agreed, as the step guard's is); the reduced gradients are handed to
the optimizer divided by the replica count, since it sums them again.
Without either, only a single device computes the norm (it is free there;
under tf.distribute it would cost an all-reduce per step).
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from engine.devices import replica_sums


class GradientNorms:
  """Clipping, skipping and the running sum of each step's global norm.

  Create it inside the strategy's scope.

  Args:
    clip: Scale a gradient down to this global norm (None: never).
    skip: An update whose norm is larger is too large to apply (None:
      none is).
    distributed: The loop runs under a tf.distribute strategy.
  """

  def __init__(self, clip: Optional[float], skip: Optional[float],
               distributed: bool):
    self.clip, self.skip = clip, skip
    self.measured = bool(clip or skip) or not distributed
    self.distributed = distributed
    self.sums = replica_sums.ReplicaSums({"norm": [], "steps": []},
                                         prefix="grad")

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

  def add(self, norm, finite) -> None:
    """Counts a step's norm in the mean, where the step and its norm are
    finite (norm None: not measured)."""
    if norm is None:
      return
    counted = tf.logical_and(finite, tf.math.is_finite(norm))
    self.sums.add(norm=tf.where(counted, norm, 0.0),
                  steps=tf.cast(counted, tf.float32))

  def mean_and_reset(self) -> Optional[float]:
    """The mean norm since the last call (None: none measured)."""
    sums = self.sums.read_and_reset()
    return (float(sums["norm"] / sums["steps"]) if sums["steps"] > 0
            else None)
