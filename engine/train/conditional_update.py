"""An optimizer update that takes effect only if the step was good.

The step guard (`step_guard`: non-finite terms, `--skip_grad_norm`)
decides per step whether its update is applied. The plain way is a `tf.cond` around the optimizer's
update, and that is what runs under tf.distribute and without XLA. Inside
an XLA loop of many steps a `conditional` that carries every weight and
optimizer slot costs more than the update itself: XLA copies each of them
into and out of the conditional on every step (for a 0.43 M-parameter MLP
with Adam, ~10 MB of copies per step). There the update is gated instead:
every write the optimizer makes becomes `where(applied, new, old)`, which
XLA fuses into the update's own loop. Where the step is applied the
values written are the very ones the `cond` path writes; where it is not,
every variable keeps its value, the iteration count included.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf


def apply_if(optimizer, variables, condition, gradients,
             gated: bool = False) -> None:
  """Applies `gradients` only when `condition` (the same on every replica).

  A `LossScaleOptimizer` unscales, and skips a non-finite update itself.

  Args:
    optimizer: The Keras optimizer.
    variables: The variables `gradients` belong to.
    condition: Scalar bool tensor: apply the update.
    gradients: One per variable.
    gated: Gate the optimizer's writes instead of branching, where the
      optimizer allows it (`can_gate`): for code XLA compiles.
  """

  def apply(grads):
    optimizer.apply_gradients(zip(grads, variables))

  if tf.__internal__.distribute.strategy_supports_no_merge_call():
    if gated and can_gate(optimizer, variables):
      with _gated_writes(optimizer, condition):
        apply(gradients)
      return
    tf.cond(condition, lambda: apply(gradients), lambda: None)
    return

  # Optimizers update through merge_call, which may not sit inside a cond
  # in replica context: branch in cross-replica context (as Keras's
  # LossScaleOptimizer does).
  def cross_replica(distribution, gradients, condition):
    agreed = distribution.experimental_local_results(condition)[0]
    tf.cond(agreed, lambda: distribution.extended.call_for_each_replica(
        apply, args=(gradients,)), lambda: None)

  tf.distribute.get_replica_context().merge_call(
      cross_replica, args=(gradients, condition))


def can_gate(optimizer, variables) -> bool:
  """Whether every write `optimizer.apply` makes goes through its
  `assign`, `assign_add` and `assign_sub` (which `_gated_writes` gates) or
  is the iteration count. Keras writes weight decay, weight constraints,
  its own moving average and gradient accumulators directly, and a
  `LossScaleOptimizer` branches itself: those keep the `cond`."""
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return False
  if (optimizer.weight_decay or optimizer.use_ema
      or optimizer.gradient_accumulation_steps):
    return False
  return all(getattr(v, "constraint", None) is None for v in variables)


@contextlib.contextmanager
def _gated_writes(optimizer, condition):
  """Within: the optimizer's writes keep the old value unless `condition`,
  and the iteration count it adds is taken back unless `condition`."""
  plain = {name: getattr(optimizer, name)
           for name in ("assign", "assign_add", "assign_sub")}

  def dense(value):
    return (tf.convert_to_tensor(value)
            if isinstance(value, tf.IndexedSlices) else value)

  def assign(variable, value):
    old = variable.value if isinstance(variable, keras.Variable) else variable
    plain["assign"](variable, tf.where(
        condition, tf.cast(dense(value), old.dtype), old.read_value()))

  def assign_add(variable, value):
    value = dense(value)
    plain["assign_add"](variable, tf.where(condition, value,
                                           tf.zeros_like(value)))

  def assign_sub(variable, value):
    value = dense(value)
    plain["assign_sub"](variable, tf.where(condition, value,
                                           tf.zeros_like(value)))

  optimizer.assign, optimizer.assign_add, optimizer.assign_sub = (
      assign, assign_add, assign_sub)
  try:
    yield
  finally:
    for name in plain:  # The class's methods again.
      delattr(optimizer, name)
  # `apply` counted the step; an update not applied does not count.
  optimizer.iterations.assign_sub(
      tf.cast(tf.logical_not(condition), optimizer.iterations.dtype))
