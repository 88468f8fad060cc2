"""The gated optimizer update (XLA's path) writes what the `cond` path
writes: the same weights, slots and iteration count, bit for bit, whether
each step is applied or skipped."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.train import conditional_update


def _state(optimizer, variables):
  return ([v.numpy().copy() for v in variables]
          + [np.asarray(v.numpy()).copy() for v in optimizer.variables])


def _run(make_optimizer, gated, applied):
  """Steps of a tiny least-squares problem, each applied or not, in one XLA
  computation; returns every variable's final value."""
  keras.utils.set_random_seed(0)
  variables = [tf.Variable(tf.random.normal([7, 5]), name="w"),
               tf.Variable(tf.random.normal([5]), name="b")]
  optimizer = make_optimizer()
  optimizer.build(variables)
  x = tf.random.stateless_normal([len(applied), 16, 7], [1, 2])
  y = tf.random.stateless_normal([len(applied), 16, 5], [3, 4])

  @tf.function(jit_compile=True)
  def steps(conditions):
    for index in tf.range(len(applied)):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(
            tf.matmul(x[index], variables[0]) + variables[1] - y[index]))
      gradients = tape.gradient(loss, variables)
      conditional_update.apply_if(optimizer, variables, conditions[index],
                                  gradients, gated=gated)

  steps(tf.constant(applied))
  return optimizer, _state(optimizer, variables)


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(
        keras.optimizers.schedules.ExponentialDecay(1e-2, 3, 0.5)),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "sgd": lambda: keras.optimizers.SGD(0.05),
}


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gated_writes_equal_the_branch(name):
  applied = [True, True, False, True, False, False, True, True]
  optimizer, branched = _run(OPTIMIZERS[name], False, applied)
  _, gated = _run(OPTIMIZERS[name], True, applied)
  assert conditional_update.can_gate(optimizer, [])
  assert int(optimizer.iterations.numpy()) == sum(applied)
  for a, b in zip(branched, gated):
    np.testing.assert_array_equal(a, b)


def test_a_skipped_step_changes_nothing():
  _, before = _run(OPTIMIZERS["adam"], True, [True, True])
  _, after = _run(OPTIMIZERS["adam"], True, [True, True, False, False])
  for a, b in zip(before, after):
    np.testing.assert_array_equal(a, b)


def test_optimizers_that_write_directly_keep_the_branch():
  variable = tf.Variable(tf.zeros([3]), constraint=lambda v: v)
  plain = tf.Variable(tf.zeros([3]))
  assert not conditional_update.can_gate(
      keras.optimizers.AdamW(1e-3, weight_decay=0.1), [plain])
  assert not conditional_update.can_gate(
      keras.optimizers.Adam(1e-3, use_ema=True), [plain])
  assert not conditional_update.can_gate(
      keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()), [plain])
  assert not conditional_update.can_gate(keras.optimizers.Adam(), [variable])
  # AdamW through the branch still skips exactly.
  applied = [True, False, True]
  make = lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1)
  _, branched = _run(make, False, applied)
  _, gated = _run(make, True, applied)
  for a, b in zip(branched, gated):
    np.testing.assert_array_equal(a, b)
