"""The owner of a run's loop and lifecycle, after Orbit's `Controller`.

`Controller.train_and_evaluate()` trains from the restored step to the last
one, in compiled calls of at most `steps_per_loop` steps, each ending at the
next boundary anyone asks for; saves every `checkpoint_every` steps and
evaluates every `eval_every` steps; hands each call's outputs to the train
actions and each evaluation to the eval actions; and at completion saves
(once), evaluates and hands the run's end to the end actions (figures,
export, the result file). One saver serves periodic, preemption and final
checkpoints (`checkpoints.save`).

Its collaborators are given, keyword-only: a trainer
(`train(num_steps) -> LoopOutputs`, `step`), an evaluator
(`evaluate(step) -> metrics`), the checkpoints (`save(step) -> path`,
`latest_step()`), and the actions. A new per-step concern is one `Action`
passed in, not an edit of the loop.

It alone chooses which weights the model holds: the training weights for
training, every training checkpoint and their own score; the evaluation
weights it is given (a moving average) for evaluations, their actions and
the end actions (`Controller._evaluation`).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from typing import Callable, ContextManager, Optional, Sequence

from engine.train.loop_state import LoopOutputs


class Action(abc.ABC):
  """Something done between compiled training calls.

  Args:
    every: Fire when the step is a multiple of this (and the loop stops
      there); 0 fires after every loop call.
  """

  def __init__(self, every: int = 0):
    self.every = every

  def next_boundary(self, step: int) -> Optional[int]:
    """The first step after `step` the loop must stop at (None: any)."""
    if self.every <= 0:
      return None
    return (step // self.every + 1) * self.every

  def fires(self, outputs: LoopOutputs) -> bool:
    """Whether to act on this loop call's outputs."""
    return self.every <= 0 or outputs.step % self.every == 0

  def observe(self, outputs: LoopOutputs) -> None:
    """Sees every loop call's outputs, whether or not the action fires."""

  def begin(self, step: int) -> None:
    """Called once before the first loop call, at the starting step."""

  def end(self) -> None:
    """Called once when the loop ends, normally or not."""

  @abc.abstractmethod
  def __call__(self, outputs: LoopOutputs) -> None:
    """Acts on a loop call's outputs."""


@dataclasses.dataclass
class RunEnd:
  """How a run ended, filled in by the end actions in turn.

  Attributes:
    step: The step training ended at.
    metrics: The final evaluation's metrics (end actions may add scores).
    checkpoint: The final checkpoint's path.
    figure_paths: The figures written.
    export_path: The export written, if any.
  """

  step: int
  metrics: dict
  checkpoint: str
  figure_paths: list = dataclasses.field(default_factory=list)
  export_path: Optional[str] = None


def _every(step: int, interval: int) -> Optional[int]:
  return (step // interval + 1) * interval if interval > 0 else None


class Controller:
  """Trains, checkpoints and evaluates one run to its end.

  Args:
    trainer: Runs steps in compiled calls (`engine.train.trainer.Trainer`).
    evaluator: `evaluate(step) -> dict` of test metrics; with
      `evaluation_weights`, also `evaluate_training_weights(step) -> dict`,
      whose metrics `evaluate(step, training_metrics)` reports beside its
      own (see `_evaluation`).
    checkpoints: Saves (`save(step) -> path`) and knows the newest
      checkpoint's step (`latest_step()`).
    last_step: The step training ends at.
    steps_per_loop: At most this many steps per compiled call.
    checkpoint_every: Save every N steps (0: only at the end).
    eval_every: Evaluate every N steps (0: only at the end).
    train_actions: Called in this order after each loop call they fire on.
    eval_actions: `(step, metrics)` after every evaluation (reports,
      summaries).
    end_actions: `(RunEnd)` once at completion, in this order.
    evaluation_weights: A context in which the model holds the weights to
      evaluate and ship in place of the training weights
      (`WeightAverage.swapped`: the moving average); None: the training
      weights are those. See `_evaluation`, the one place it is entered.
  """

  def __init__(self, *, trainer, evaluator, checkpoints, last_step: int,
               steps_per_loop: int, checkpoint_every: int = 0,
               eval_every: int = 0, train_actions: Sequence[Action] = (),
               eval_actions: Sequence = (), end_actions: Sequence = (),
               evaluation_weights: Optional[
                   Callable[[], ContextManager]] = None):
    self.evaluation_weights = evaluation_weights
    self.trainer = trainer
    self.evaluator = evaluator
    self.checkpoints = checkpoints
    self.last_step = last_step
    self.steps_per_loop = steps_per_loop
    self.checkpoint_every = checkpoint_every
    self.eval_every = eval_every
    self.train_actions = list(train_actions)
    self.eval_actions = list(eval_actions)
    self.end_actions = list(end_actions)

  def save(self, step: int) -> str:
    """The run's one saver."""
    return self.checkpoints.save(step)

  def evaluate(self, step: int) -> dict:
    """Evaluates and hands the metrics to the eval actions."""
    with self._evaluation(step) as metrics:
      return metrics

  @contextlib.contextmanager
  def _evaluation(self, step: int):
    """Evaluates at `step`, hands the metrics to the eval actions and yields
    them, with the evaluation weights in the model until the caller's block
    ends (the end actions run there).

    The one place the model's weights are chosen for anything but
    training. With `evaluation_weights`, the evaluator first scores the
    training weights while the model still holds them
    (`evaluate_training_weights(step)`: the raw weights' ELBO); then the
    evaluation weights go in for the evaluation (`evaluate(step,
    training_metrics)` reports both), its actions and the caller's block,
    and come out before training goes on, so every training checkpoint
    holds the training weights.
    """
    if self.evaluation_weights is None:
      training_metrics, weights = None, contextlib.nullcontext()
    else:
      training_metrics = self.evaluator.evaluate_training_weights(step)
      weights = self.evaluation_weights()
    with weights:
      metrics = (self.evaluator.evaluate(step) if training_metrics is None
                 else self.evaluator.evaluate(step, training_metrics))
      for action in self.eval_actions:
        action(step, metrics)
      yield metrics

  def train(self) -> int:
    """Trains from the trainer's step to the last; returns the step reached.

    Raises:
      Whatever an action raises to end the run (a divergence, a preemption).
    """
    step = self.trainer.step
    for action in self.train_actions:
      action.begin(step)
    try:
      while step < self.last_step:
        boundaries = [step + self.steps_per_loop, self.last_step]
        boundaries += [b for b in (
            _every(step, self.checkpoint_every), _every(step, self.eval_every),
            *(a.next_boundary(step) for a in self.train_actions))
                       if b is not None]
        outputs = self.trainer.train(min(boundaries) - step)
        step = outputs.step
        for action in self.train_actions:
          action.observe(outputs)
          if action.fires(outputs):
            action(outputs)
        step = self.trainer.step  # An action may have moved it (recovery).
        if step >= self.last_step:
          break  # The end saves and evaluates, once.
        if self.checkpoint_every and step % self.checkpoint_every == 0:
          self.save(step)
        if self.eval_every and step % self.eval_every == 0:
          self.evaluate(step)
    finally:
      for action in self.train_actions:
        action.end()
    return step

  def train_and_evaluate(self) -> RunEnd:
    """Trains to the end; then saves (unless a checkpoint of that step
    exists), evaluates, and hands the run's end to the end actions."""
    step = self.train()
    checkpoint = (self.checkpoints.latest
                  if self.checkpoints.latest_step() == step
                  else self.save(step))
    with self._evaluation(step) as metrics:
      end = RunEnd(step, metrics, checkpoint)
      for action in self.end_actions:
        action(end)
    return end
