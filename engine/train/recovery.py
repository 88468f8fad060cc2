"""`--nan_policy=recover`: back to the last good checkpoint, at a lower rate.

When the step guard stops the loop for a non-finite step (the bad update
was not applied), `RecoveryAction` restores the newest checkpoint (weights, optimizer, step,
moving average), multiplies the learning rate by `--recover_lr_factor`
(`RecoveryState.scale`, which the schedule multiplies by) and lets the
controller carry on from the restored step; the batches are the same pure
function of the step, so only the lower rate changes the path. The count
and the scale are checkpointed, so a run killed after a recovery resumes at
the lowered rate. After `--max_recoveries` the run stops with exit 3.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from engine.errors import TrainingDiverged
from engine.train.controller import Action
from engine.train.loop_state import NON_FINITE, LoopOutputs


class RecoveryState:
  """The recoveries so far and the learning rate's factor (checkpointed;
  create inside the strategy's scope)."""

  def __init__(self):
    self.count = tf.Variable(0, dtype=tf.int64, trainable=False,
                             name="recoveries")
    self.scale = tf.Variable(1.0, dtype=tf.float32, trainable=False,
                             name="learning_rate_scale")

  def checkpoint_items(self) -> dict:
    """What a checkpoint holds of it (`Checkpointer(state=...)`)."""
    return {"recoveries": self.count, "learning_rate_scale": self.scale}


class RecoveryAction(Action):
  """Restores the last good checkpoint when a step was non-finite.

  Args:
    state: The run's `RecoveryState`.
    restore: Restores the newest checkpoint; returns its path (None: none).
      (The trainer's next call starts its batches at the restored step.)
    factor: `--recover_lr_factor`.
    max_recoveries: `--max_recoveries`.
    say: Where the news goes.

  Attributes:
    events: One dict per recovery of this process (for result.json).
  """

  def __init__(self, state: RecoveryState, restore: Callable, factor: float,
               max_recoveries: int, say: Callable[[str], None]):
    super().__init__()
    self.state, self.restore = state, restore
    self.factor, self.max_recoveries, self.say = factor, max_recoveries, say
    self.events: list[dict] = []

  def fires(self, outputs: LoopOutputs) -> bool:
    return outputs.guard.stop_cause == NON_FINITE

  def __call__(self, outputs: LoopOutputs) -> None:
    bad_step = outputs.guard.last_bad_step + 1
    terms = " and ".join(outputs.guard.bad_terms) or "loss"
    count = int(self.state.count.read_value())
    if count >= self.max_recoveries:
      raise TrainingDiverged(
          f"training stopped at step {bad_step}: the {terms} became "
          f"non-finite again after {count} recoveries (--max_recoveries="
          f"{self.max_recoveries}); that update was not applied. Lower "
          "--learning_rate or --recover_lr_factor")
    restored = self.restore()
    if restored is None:
      raise TrainingDiverged(
          f"training stopped at step {bad_step}: the {terms} became "
          "non-finite before any checkpoint was written, so there is none "
          "to recover from (--nan_policy=recover); lower --checkpoint_every "
          "or --learning_rate")
    # The checkpoint holds the count and scale of its time: these go on.
    count += 1
    scale = self.factor ** count
    self.state.count.assign(count)
    self.state.scale.assign(scale)
    event = {"step": bad_step, "terms": terms, "restored": restored,
             "learning_rate_scale": scale, "recovery": count}
    self.events.append(event)
    self.say(f"step {bad_step}: the {terms} became non-finite; recovered "
             f"from {restored}, learning rate x{scale:g} (recovery {count} "
             f"of at most {self.max_recoveries})")
