"""Captures a profiler trace of a range of training steps (`--profile_steps`).

The trace goes to `<model_dir>/plugins/profile/<time>/`, where TensorBoard's
profile plugin finds it; `tools/profile_summary.py` prints its busiest ops and
how much time the host spends between XLA executions.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf


class StepProfiler:
  """Starts the profiler at step `first` and stops it at step `last`.

  The loop must stop at both steps (`engine.actions.ProfileAction`), so the
  trace covers exactly those steps' compiled calls.

  Args:
    steps: (first, last), or None for no profiling.
    logdir: Where the trace goes (under plugins/profile).
    say: Prints one line to the user.
  """

  def __init__(self, steps: Optional[tuple[int, int]], logdir: str,
               say: Callable[[str], None]):
    self.steps = steps
    self.logdir = logdir
    self.say = say
    self.active = False

  def before_loop(self, step: int) -> None:
    if self.steps and not self.active and (
        self.steps[0] <= step < self.steps[1]):
      tf.profiler.experimental.start(self.logdir)
      self.active = True

  def after_loop(self, step: int) -> None:
    if self.active and step >= self.steps[1]:
      self.stop()
      self.say(f"  profile of steps {self.steps[0]}-{step} written under "
               f"{self.logdir}/plugins/profile")

  def stop(self) -> None:
    """Stops a running trace (also when training ends early)."""
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False
