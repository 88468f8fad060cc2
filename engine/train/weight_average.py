"""`--ema_decay`: an exponential moving average of the trainable weights.

After each applied update, inside the compiled step (no host round trip):
`average = d * average + (1 - d) * weight`, with `d = --ema_decay`, or with
`--ema_dynamic_decay` `d = min(decay, (1 + t) / (10 + t))` at step t, as
Model Garden's `ExponentialMovingAverage` does (early averages then follow
the weights instead of remembering the initialization). The averages are
float32 whatever the compute dtype (the variables are), and each replica
updates its own copy from its own (identical) weights, so all copies stay
equal with no collective. They are checkpointed beside the weights.

`swapped()` exchanges the model's weights and the averages, and exchanges
them back on leaving. The controller alone enters it
(`controller.Controller._evaluation`): evaluation, its actions (the best
checkpoint among them), figures, sample scores and the export run inside
it, while the raw weights' ELBO is measured before it and every training
checkpoint is written outside it, so training resumes on the raw weights.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf


class WeightAverage:
  """The moving average of `variables` (create inside the strategy scope).

  Args:
    variables: The model's trainable variables.
    decay: The average's decay, in (0, 1).
    dynamic: Use `min(decay, (1 + t) / (10 + t))` at step t.
  """

  def __init__(self, variables: list, decay: float, dynamic: bool = False):
    self.decay, self.dynamic = float(decay), dynamic
    self.variables = list(variables)
    self.averages = [
        tf.Variable(tf.convert_to_tensor(v), trainable=False,
                    name=f"average_{i}",
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        for i, v in enumerate(self.variables)]

  def decay_at(self, step) -> tf.Tensor:
    if not self.dynamic:
      return tf.constant(self.decay)
    t = tf.cast(step, tf.float32)
    return tf.minimum(self.decay, (1.0 + t) / (10.0 + t))

  def update(self, applied, step) -> None:
    """Moves the averages toward the weights, where `applied` (the update
    of step `step` was applied; a skipped step leaves them)."""
    decay = tf.where(applied, self.decay_at(step), 1.0)
    for average, variable in zip(self.averages, self.variables):
      average.assign(decay * average
                     + (1.0 - decay) * tf.cast(variable, average.dtype))

  def reset(self) -> None:
    """Starts the averages at the current weights (a checkpoint without
    averages was restored)."""
    for average, variable in zip(self.averages, self.variables):
      average.assign(tf.convert_to_tensor(variable))

  def _exchange(self) -> None:
    for average, variable in zip(self.averages, self.variables):
      weights = tf.identity(tf.convert_to_tensor(variable))
      variable.assign(average.read_value())
      average.assign(weights)

  @contextlib.contextmanager
  def swapped(self):
    """The averages in the model (and the weights in the averages) inside;
    as they were on leaving, however it is left."""
    self._exchange()
    try:
      yield
    finally:
      self._exchange()
