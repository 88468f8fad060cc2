"""The step guard: whether each step's update is applied, and when the loop
must stop.

A step is skipped for one of two causes (`loop_state.CAUSES`):
- `non_finite`: a loss term or a gradient is NaN or inf. All replicas agree
  through one all-reduce of `flags`; the update is never applied.
  `--nan_policy=stop` (and `recover`) end the loop at once; `skip` goes on
  until `--max_skipped_steps` such steps in a row.
- `gradient_norm`: a finite update whose global norm is over
  `--skip_grad_norm` (see `gradient_norms`); `--max_skipped_steps` in a row
  end the loop.
Each cause counts its own steps in a row, so a streak of one cause is never
cut short, nor lengthened, by the other. What the guard saw is read once per
compiled call, as a `loop_state.GuardReport`.
"""

from __future__ import annotations

import tensorflow as tf

from engine.train.loop_state import CAUSES, CHECKED_TERMS, GuardReport


def _replica_local(name, value, dtype):
  """A variable each replica updates alone; reads return the first replica's
  (all replicas hold the same value: it is computed from all-reduced data)."""
  return tf.Variable(value, dtype=dtype, trainable=False, name=name,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class StepGuard:
  """Decides, step by step, whether to apply the update and whether to stop.

  Create it inside the strategy's scope. Its state covers this process
  only (it is not checkpointed).

  Args:
    nan_policy: `stop`, `skip` or `recover`.
    max_skipped_steps: Skipped steps in a row (of one cause) that end the
      loop; a non-finite step ends it at once unless `nan_policy` is `skip`.
  """

  def __init__(self, nan_policy: str, max_skipped_steps: int):
    if nan_policy not in ("stop", "skip", "recover"):
      raise ValueError(f"unknown nan_policy {nan_policy!r}")
    self.nan_policy = nan_policy
    self.limits = tf.constant(
        [max_skipped_steps if nan_policy == "skip" else 1,
         max_skipped_steps], tf.int64)
    self._skipped = _replica_local("guard_skipped", [0] * len(CAUSES),
                                   tf.int64)
    self._in_a_row = _replica_local("guard_in_a_row", [0] * len(CAUSES),
                                    tf.int64)
    self._stop_cause = _replica_local("guard_stop_cause", -1, tf.int64)
    self._first_bad_step = _replica_local("guard_first_bad", -1, tf.int64)
    self._last_bad_step = _replica_local("guard_last_bad", -1, tf.int64)
    self._bad_flags = _replica_local(
        "guard_bad_terms", [0.0] * len(CHECKED_TERMS), tf.float32)
    self._last_skipped_norm = _replica_local("guard_last_norm", 0.0,
                                             tf.float32)

  @staticmethod
  def non_finite_flags(terms: dict, gradients=None) -> tf.Tensor:
    """1.0 per `CHECKED_TERMS` entry that is not finite on this replica
    (gradients None: not checked); all-reduce them before `record`."""

    def bad(tensors):
      finite = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors
                if t is not None]
      return tf.cast(tf.logical_not(tf.reduce_all(finite)), tf.float32)

    gradient_flag = tf.constant(0.0) if gradients is None else bad(gradients)
    return tf.stack([bad([terms["reconstruction"]]), bad([terms["kl"]]),
                     gradient_flag])

  def record(self, flags, too_large, norm, global_step):
    """Notes a step's outcome; returns (apply the update, stop the loop).

    Args:
      flags: The all-reduced `non_finite_flags` (the same on every replica).
      too_large: Whether the update's norm is over `--skip_grad_norm`.
      norm: That norm (None: not measured).
      global_step: The step's global step (0-based).
    """
    finite = tf.equal(tf.reduce_sum(flags), 0.0)
    norm_skip = tf.logical_and(finite, too_large)
    skipped = tf.stack([tf.logical_not(finite), norm_skip])
    in_a_row = tf.where(skipped, self._in_a_row + 1,
                        tf.zeros_like(self._in_a_row))
    self._in_a_row.assign(in_a_row)
    self._skipped.assign_add(tf.cast(skipped, tf.int64))
    over = in_a_row >= self.limits
    stop = tf.reduce_any(over)
    self._stop_cause.assign(tf.where(
        stop, tf.argmax(tf.cast(over, tf.int64), output_type=tf.int64),
        tf.constant(-1, tf.int64)))
    step = tf.cast(global_step, tf.int64)
    self._first_bad_step.assign(tf.where(
        tf.logical_and(tf.logical_not(finite), self._first_bad_step < 0),
        step, self._first_bad_step))
    self._last_bad_step.assign(tf.where(finite, self._last_bad_step, step))
    self._bad_flags.assign(tf.where(finite, self._bad_flags,
                                    tf.minimum(flags, 1.0)))
    if norm is not None:
      self._last_skipped_norm.assign(tf.where(
          norm_skip, tf.cast(norm, tf.float32), self._last_skipped_norm))
    return tf.logical_and(finite, tf.logical_not(too_large)), stop

  def stopped(self) -> tf.Tensor:
    """Whether the latest step ended the loop (a bool tensor)."""
    return self._stop_cause >= 0

  def report(self) -> GuardReport:
    """What the guard has seen, read from the device: one read after every
    compiled call, the rest only once a step was skipped (only a skipped
    step changes them, and only a skip can stop the loop: every limit is
    at least 1)."""
    skipped = self._skipped.read_value().numpy()
    if not skipped.any():
      return GuardReport()
    cause = int(self._stop_cause.read_value())
    flags = self._bad_flags.read_value().numpy()
    return GuardReport(
        stop_cause=CAUSES[cause] if cause >= 0 else None,
        skipped=dict(zip(CAUSES, (int(n) for n in skipped))),
        first_bad_step=int(self._first_bad_step.read_value()),
        last_bad_step=int(self._last_bad_step.read_value()),
        bad_terms=tuple(name for name, flag in zip(CHECKED_TERMS, flags)
                        if flag > 0),
        last_skipped_norm=float(self._last_skipped_norm.read_value()))
