"""What happens between compiled training calls, one action per concern:
the progress line and training summaries, the step guard's stop, preemption
(SIGTERM), and profiling.

Each is an `engine.train.controller.Action`: it says at which steps it fires
and acts on the `loop_state.LoopOutputs` the trainer returned. The build
step makes the list; the controller runs them in that order after every
loop call (and itself saves and evaluates).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Callable, Optional, TextIO

import tensorflow as tf

from engine.train.controller import Action
from engine.errors import TrainingDiverged
from engine.train.loop_state import (CAUSES, GRADIENT_NORM, NON_FINITE,
                                     GuardReport, LoopOutputs)

Say = Callable[[str], None]


class Preempted(Exception):
  """Raised after SIGTERM once a checkpoint has been saved; re-run to resume."""

  def __init__(self, step: int, checkpoint: str):
    super().__init__(f"preempted (SIGTERM) at step {step}: saved {checkpoint};"
                     " re-run the same command to resume")
    self.step = step
    self.checkpoint = checkpoint


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours:d}:{minutes:02d}:{seconds:02d}"


class ProgressAction(Action):
  """The progress line and the training summaries (with the learning rate
  the next step takes), every `every` steps:
  `step 400/4680 [##---] 8.5% epoch 0.85/10 loss ... | ex/s | ETA` (the
  epoch, passes over the training set, where `steps_per_epoch` is given).

  The rate is the examples trained since the last report over the time the
  training calls took, so an evaluation in between does not inflate it.
  """

  _BAR = 20

  def __init__(self, every: int, last_step: int, start_step: int,
               stream: Optional[TextIO], writer, say: Say,
               learning_rate: Optional[Callable[[], float]] = None,
               steps_per_epoch: Optional[int] = None):
    super().__init__(every)
    self.learning_rate = learning_rate
    self.steps_per_epoch = steps_per_epoch
    self.last_step = last_step
    self.stream = stream or sys.stdout
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
    self.report(step, metrics, rate,
                (self.last_step - step) / max(steps_per_sec, 1e-9))
    skipped = outputs.guard.skipped
    if skipped[NON_FINITE]:
      self.say(f"  {skipped[NON_FINITE]} step(s) skipped so far: "
               "non-finite loss (--nan_policy=skip)")
    if skipped[GRADIENT_NORM]:
      self.say(f"  {skipped[GRADIENT_NORM]} update(s) skipped so far: "
               "gradient norm over --skip_grad_norm")
    extra = {} if self.learning_rate is None else {
        "learning_rate": self.learning_rate()}  # For the next step.
    if outputs.grad_norm is not None:
      extra["grad_norm"] = outputs.grad_norm  # The last call's mean.
    self.writer.scalars("train", step, {
        **metrics, "examples_per_sec": rate, **extra,
        **{f"skipped_steps/{cause}": count
           for cause, count in skipped.items()}})
    self._sums, self._examples, self._seconds = {}, 0.0, 0.0

  def report(self, step: int, metrics: dict, examples_per_sec: float,
             seconds_left: float) -> str:
    """Prints and returns the progress line for `step`."""
    done = min(step / max(self.last_step, 1), 1.0)
    filled = int(round(done * self._BAR))
    bar = "#" * filled + "-" * (self._BAR - filled)
    epoch = ""
    if self.steps_per_epoch:
      epoch = (f"epoch {step / self.steps_per_epoch:.2f}/"
               f"{self.last_step / self.steps_per_epoch:.4g} ")
    line = (f"step {step}/{self.last_step} [{bar}] {100 * done:5.1f}% "
            f"{epoch}loss {metrics['loss']:.2f} recon {metrics['reconstruction']:.2f} "
            f"kl {metrics['kl']:.2f} | {examples_per_sec:,.0f} ex/s "
            f"| ETA {_format_duration(seconds_left)}")
    print(line, file=self.stream, flush=True)
    return line


class GuardStopAction(Action):
  """Ends the run with one line when the step guard stopped the loop
  (`step_guard`): why, since when, and what is kept.

  Args:
    nan_policy: `stop` or `skip` (what a non-finite step does).
    max_skipped_steps: What the guard tolerates in a row.
    skip_grad_norm: `--skip_grad_norm` (None: off).
    latest_checkpoint: Returns the last checkpoint written, if any.
    causes: The stop causes it ends the run on (`--nan_policy=recover`
      handles the non-finite one itself).
  """

  def __init__(self, nan_policy: str, max_skipped_steps: int,
               skip_grad_norm: Optional[float],
               latest_checkpoint: Callable[[], Optional[str]],
               causes=CAUSES):
    super().__init__()
    self.nan_policy = nan_policy
    self.max_skipped_steps = max_skipped_steps
    self.skip_grad_norm = skip_grad_norm
    self.latest_checkpoint = latest_checkpoint
    self.causes = tuple(causes)

  def fires(self, outputs: LoopOutputs) -> bool:
    return outputs.guard.stop_cause in self.causes

  def __call__(self, outputs: LoopOutputs) -> None:
    guard = outputs.guard
    if guard.stop_cause == NON_FINITE:
      raise TrainingDiverged(self._non_finite(guard))
    raise TrainingDiverged(self._gradient_norm(outputs.step, guard))

  def _non_finite(self, guard: GuardReport) -> str:
    terms = describe_terms(guard.bad_terms)
    checkpoint = self.latest_checkpoint()
    kept = (f"the last good checkpoint, {checkpoint}, is kept and re-running "
            "resumes from it" if checkpoint else "no checkpoint was written "
            "before it")
    last = guard.last_bad_step
    if self.nan_policy != "skip":
      return (f"training stopped at step {last + 1}: the {terms} became "
              f"non-finite (NaN or inf); that update was not applied, and "
              f"{kept}. Lower --learning_rate, or pass --nan_policy=skip")
    return (f"training stopped at step {last + 1}: "
            f"{self.max_skipped_steps} steps in a row were non-finite (the "
            f"{terms} at the last one; {guard.skipped[NON_FINITE]} skipped in "
            f"all, since step {guard.first_bad_step + 1}); {kept}. Lower "
            "--learning_rate")

  def _gradient_norm(self, step: int, guard: GuardReport) -> str:
    checkpoint = self.latest_checkpoint()
    kept = (f"the last checkpoint, {checkpoint}, is kept" if checkpoint
            else "no checkpoint was written")
    return (f"training stopped at step {step}: {self.max_skipped_steps} "
            f"updates in a row had a gradient norm over --skip_grad_norm="
            f"{self.skip_grad_norm:g} (the last: {guard.last_skipped_norm:.4g}"
            f"; {guard.skipped[GRADIENT_NORM]} skipped in all); {kept}. "
            "Raise --skip_grad_norm, or lower --learning_rate")


def describe_terms(terms) -> str:
  """`("reconstruction", "gradients")` as words: "reconstruction term and
  the gradients" ("loss" if none is named)."""
  names = {"reconstruction": "reconstruction term", "kl": "KL term",
           "gradients": "gradients"}
  return " and the ".join(names[term] for term in terms) or "loss"


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
  """Traces training steps [first, last) (`--profile_steps`) into
  `<logdir>/plugins/profile/<time>/`, where TensorBoard's profile plugin
  finds it (`tools/profile_summary.py` prints its busiest ops). The loop
  stops at both steps, so the trace covers exactly their compiled calls."""

  def __init__(self, steps: Optional[tuple[int, int]], logdir: str, say: Say):
    super().__init__()
    self.steps = steps
    self.logdir = logdir
    self.say = say
    self.active = False

  def next_boundary(self, step: int) -> Optional[int]:
    edges = [edge for edge in (self.steps or ()) if edge > step]
    return min(edges) if edges else None

  def _start_if_due(self, step: int) -> None:
    if self.steps and not self.active and (
        self.steps[0] <= step < self.steps[1]):
      tf.profiler.experimental.start(self.logdir)
      self.active = True

  def begin(self, step: int) -> None:
    self._start_if_due(step)

  def __call__(self, outputs: LoopOutputs) -> None:
    if self.active and outputs.step >= self.steps[1]:
      self.end()
      self.say(f"  profile of steps {self.steps[0]}-{outputs.step} written "
               f"under {self.logdir}/plugins/profile")
    self._start_if_due(outputs.step)

  def end(self) -> None:
    """Stops a running trace (also when training ends early)."""
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False
