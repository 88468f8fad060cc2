"""What a trainer's compiled calls read: the training batches of global
steps [start, end), and where they continue from.

Batches are a pure function of (seed, step). `training_batches` makes them
for a start step; a `Feed` hands each call the batches that continue where
the step is, and starts them again when a checkpoint restore moved the step
(a resume, `--nan_policy=recover`), so no caller has to say so.
"""

from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from engine.data import pipeline
from engine.data import step_batches


def training_batches(strategy: tf.distribute.Strategy, loops_on_device: bool,
                     images: tf.Tensor, options: pipeline.PipelineOptions,
                     steps_per_loop: int, start_step: int, end_step: int,
                     labels: Optional[tf.Tensor] = None):
  """What the training loop is fed for global steps [start_step, end_step).

  `labels` (int64 [N]) go into every batch (conditional models).

  Returns:
    A `step_batches.StepBatches` where the loop builds its own batches
    (`loops_on_device`), else an iterator over the strategy's distributed
    tf.data pipeline. Both give the same batches.
  """
  if loops_on_device:
    return step_batches.StepBatches(images, options, steps_per_loop,
                                    labels=labels)
  return iter(strategy.distribute_datasets_from_function(
      lambda context: pipeline.train_dataset(images, options, start_step,
                                             end_step, context, labels)))


class Feed:
  """The batches a trainer's calls read, from whatever step it is at.

  Args:
    make: `(start_step) -> batches`, what `training_batches` returns.
  """

  def __init__(self, make: Callable[[int], object]):
    self._make = make
    self._batches = None
    self._step = None  # Where the batches continue from.

  def batches(self, step: int):
    """The batches that continue at global step `step`: the last call's if
    it ended there, else new ones that start there."""
    if self._batches is None or self._step != step:
      self._batches = self._make(step)
    return self._batches

  def ended_at(self, step: int) -> None:
    """The call that read `batches` ended at `step`."""
    self._step = step
