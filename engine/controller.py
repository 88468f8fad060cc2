"""The outer loop, after Orbit's `Controller`: train to the next boundary, then
hand what the trainer returned to the actions.

The controller knows nothing about checkpoints, evaluation, logging or
signals. Each of those is an `Action` (see `engine.actions`) that says at
which steps the loop must stop for it (`next_boundary`) and what it does
with a loop call's outputs (`__call__`). A new per-step concern, say EMA
weights or "export the best checkpoint by test ELBO", is one new action and
one line where the list is built; the loop stays as it is.
"""

from __future__ import annotations

import abc
from typing import Callable, Optional, Sequence

from engine.loop_state import LoopOutputs


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


class Controller:
  """Runs `train(num_steps) -> LoopOutputs` from a step to `last_step`.

  Args:
    train: Runs that many steps in one compiled call and returns its
      outputs (`steps.Trainer.train`).
    actions: Called in this order after each loop call they fire on.
    last_step: The step training ends at.
    steps_per_loop: At most this many steps per call.
  """

  def __init__(self, train: Callable[[int], LoopOutputs],
               actions: Sequence[Action], last_step: int,
               steps_per_loop: int):
    self.train = train
    self.actions = list(actions)
    self.last_step = last_step
    self.steps_per_loop = steps_per_loop

  def run(self, step: int) -> int:
    """Trains from `step` to the last step; returns the step reached.

    Raises:
      Whatever an action raises to end the run (a divergence, a preemption).
    """
    for action in self.actions:
      action.begin(step)
    try:
      while step < self.last_step:
        boundaries = [step + self.steps_per_loop, self.last_step]
        boundaries += [b for b in (a.next_boundary(step)
                                   for a in self.actions) if b is not None]
        outputs = self.train(min(boundaries) - step)
        step = outputs.step
        for action in self.actions:
          action.observe(outputs)
          if action.fires(outputs):
            action(outputs)
    finally:
      for action in self.actions:
        action.end()
    return step
