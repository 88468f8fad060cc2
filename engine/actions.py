"""What happens between compiled training calls, one action per concern.

Each is an `engine.controller.Action`: it says at which steps it fires and
acts on the `loop_state.LoopOutputs` the trainer returned. `engine.runner` builds
the list; the controller runs them in that order after every loop call.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable, Optional, TextIO

import tensorflow as tf

from engine import profiling
from engine import progress
from engine.controller import Action
from engine.errors import TrainingDiverged
from engine.loop_state import LoopOutputs, NonFiniteState

Say = Callable[[str], None]


class Preempted(Exception):
  """Raised after SIGTERM once a checkpoint has been saved; re-run to resume."""

  def __init__(self, step: int, checkpoint: str):
    super().__init__(f"preempted (SIGTERM) at step {step}: saved {checkpoint};"
                     " re-run the same command to resume")
    self.step = step
    self.checkpoint = checkpoint


class ProgressAction(Action):
  """The progress line and the training summaries, every `every` steps.

  The rate is the examples trained since the last report over the time the
  training calls took, so an evaluation in between does not inflate it.
  """

  def __init__(self, every: int, last_step: int, start_step: int,
               stream: TextIO, writer, say: Say):
    super().__init__(every)
    self.last_step = last_step
    self.bar = progress.ProgressBar(last_step, stream)
    self.writer = writer
    self.say = say
    self.start_step = start_step
    self.started = time.perf_counter()
    self._sums: dict = {}
    self._examples = 0.0
    self._seconds = 0.0

  def observe(self, outputs: LoopOutputs) -> None:
    self._sums = {name: self._sums.get(name, 0.0) + value
                  for name, value in outputs.sums.items()}
    self._examples += outputs.examples
    self._seconds += outputs.seconds

  def fires(self, outputs: LoopOutputs) -> bool:
    return super().fires(outputs) or outputs.step == self.last_step

  def __call__(self, outputs: LoopOutputs) -> None:
    step = outputs.step
    metrics = {name: total / max(self._examples, 1.0)
               for name, total in self._sums.items()}
    rate = self._examples / max(self._seconds, 1e-9)
    steps_per_sec = (step - self.start_step) / max(
        time.perf_counter() - self.started, 1e-9)
    self.bar.report(step, metrics, rate,
                    (self.last_step - step) / max(steps_per_sec, 1e-9))
    if outputs.skipped_steps:
      self.say(f"  {outputs.skipped_steps} step(s) skipped so far: "
               "non-finite loss (--nan_policy=skip)")
    self.writer.scalars("train", step, {
        **metrics, "examples_per_sec": rate,
        "skipped_steps": outputs.skipped_steps})
    self._sums, self._examples, self._seconds = {}, 0.0, 0.0


class CheckpointAction(Action):
  """Saves a checkpoint every `every` steps (0: never; the run saves at the
  end)."""

  def __init__(self, every: int, save: Callable[[int], str]):
    super().__init__(every)
    self.save = save

  def fires(self, outputs: LoopOutputs) -> bool:
    return self.every > 0 and super().fires(outputs)

  def __call__(self, outputs: LoopOutputs) -> None:
    self.save(outputs.step)


class EvaluationAction(Action):
  """Evaluates every `every` steps but the last (the run evaluates then)."""

  def __init__(self, every: int, last_step: int,
               evaluate: Callable[[int], dict]):
    super().__init__(every)
    self.last_step = last_step
    self.evaluate = evaluate

  def fires(self, outputs: LoopOutputs) -> bool:
    return (self.every > 0 and super().fires(outputs)
            and outputs.step != self.last_step)

  def __call__(self, outputs: LoopOutputs) -> None:
    self.evaluate(outputs.step)


class NonFiniteStopAction(Action):
  """Ends the run when the non-finite guard stopped the loop (`--nan_policy`).

  Args:
    state: The trainer's non-finite state.
    nan_policy: `stop` or `skip`.
    max_skipped_steps: What `skip` tolerates in a row.
    latest_checkpoint: Returns the last checkpoint written, if any.
  """

  def __init__(self, state: NonFiniteState, nan_policy: str,
               max_skipped_steps: int,
               latest_checkpoint: Callable[[], Optional[str]]):
    super().__init__()
    self.state = state
    self.nan_policy = nan_policy
    self.max_skipped_steps = max_skipped_steps
    self.latest_checkpoint = latest_checkpoint

  def fires(self, outputs: LoopOutputs) -> bool:
    return outputs.stopped

  def __call__(self, outputs: LoopOutputs) -> None:
    raise TrainingDiverged(self.message(outputs.skipped_steps))

  def message(self, skipped: int) -> str:
    names = {"reconstruction": "reconstruction term", "kl": "KL term",
             "gradients": "gradients"}
    terms = " and the ".join(names[t] for t in self.state.bad_terms()) or "loss"
    last = int(self.state.last_bad_step.read_value())
    checkpoint = self.latest_checkpoint()
    kept = (f"the last good checkpoint, {checkpoint}, is kept and re-running "
            "resumes from it" if checkpoint else "no checkpoint was written "
            "before it")
    if self.nan_policy == "stop":
      return (f"training stopped at step {last + 1}: the {terms} became "
              f"non-finite (NaN or inf); that update was not applied, and "
              f"{kept}. Lower --learning_rate, or pass --nan_policy=skip")
    first = int(self.state.first_bad_step.read_value())
    return (f"training stopped at step {last + 1}: "
            f"{self.max_skipped_steps} steps in a row were non-finite (the "
            f"{terms} at the last one; {skipped} skipped in all, since step "
            f"{first + 1}); {kept}. Lower --learning_rate")


class PreemptionAction(Action):
  """Turns SIGTERM on any worker into a checkpoint and `Preempted`.

  The signal only sets a flag; after each loop call the replicas agree (a
  collective sum) whether any process got it, so all of them save the same
  step together.
  """

  def __init__(self, strategy: tf.distribute.Strategy,
               save: Callable[[int], str]):
    super().__init__()
    self.strategy = strategy
    self.save = save
    self.raised = False
    self._previous = None
    self._count = tf.function(self._count_raised)

  def _count_raised(self, flag):
    per_replica = self.strategy.run(lambda: tf.identity(flag))
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                axis=None)

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def begin(self, step: int) -> None:
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def end(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def __call__(self, outputs: LoopOutputs) -> None:
    if int(self._count(tf.constant(int(self.raised)))):
      raise Preempted(outputs.step, self.save(outputs.step))


class ProfileAction(Action):
  """Traces training steps [first, last) (`--profile_steps`)."""

  def __init__(self, steps: Optional[tuple[int, int]], logdir: str, say: Say):
    super().__init__()
    self.profiler = profiling.StepProfiler(steps, logdir, say)

  def next_boundary(self, step: int) -> Optional[int]:
    edges = [edge for edge in (self.profiler.steps or ()) if edge > step]
    return min(edges) if edges else None

  def begin(self, step: int) -> None:
    self.profiler.before_loop(step)

  def __call__(self, outputs: LoopOutputs) -> None:
    self.profiler.after_loop(outputs.step)
    self.profiler.before_loop(outputs.step)

  def end(self) -> None:
    self.profiler.stop()
