"""Training batches built inside the compiled loop, on one device.

`StepBatches` gives the very batches `pipeline.train_dataset` gives (bit for
bit: same orders, same draws, same arithmetic), but lets the training loop
build them itself, so no tf.data iterator sits between steps and, with XLA,
many steps run as one XLA execution.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from engine.data import indexed
from engine.data.draws import PipelineOptions, apply_draws, random_draws
from engine.data.pipeline import example_order, steps_per_epoch


class StepBatches:
  """`train_dataset`'s batches, built inside a compiled training loop.

  For one device: instead of a tf.data iterator feeding one step at a time
  (and, on a small host, its threads competing with the step for cores), the
  loop computes batches itself; with XLA many steps then run in one XLA
  computation with no host work between them. The work splits in two:

  - `draw(first_step)`, ordinary TF ops run once per `steps_per_call`
    steps: each step's example order (`index_shuffle` has no XLA kernel) and
    random draws (XLA's stateless RNG yields other numbers than TF's
    kernels, and batches must match `train_dataset`'s bit for bit so that
    runs agree whatever the path and resume exactly).
  - `batch(draws_of_one_step)`, inside the compiled step: the gather from the
    uint8 training set and the arithmetic that makes inputs and targets.

  Args:
    images: uint8 tensor [N, rows, cols, channels], the training set, or a
      `indexed.IndexedImages` (`draw` then reads a call's examples, and starts
      reading the next call's).
    options: Pipeline options.
    max_steps_per_call: Upper bound on the steps one `draw` covers; it is
      lowered so that the draws stay under `draw_budget_bytes`.
    draw_budget_bytes: Memory the draws of one call may take.
    labels: int64 tensor [N], the training labels, for batches that carry
      them (None: no `labels`).
  """

  def __init__(self, images: tf.Tensor, options: PipelineOptions,
               max_steps_per_call: int, draw_budget_bytes: int = 64 << 20,
               labels: tf.Tensor | None = None):
    self.images = images
    self.labels = labels
    self.options = options
    self.num_examples = int(images.shape[0])
    if steps_per_epoch(self.num_examples, options.global_batch_size) < 1:
      raise ValueError(f"{self.num_examples} training examples cannot fill "
                       f"one batch of {options.global_batch_size}")
    self.image_shape = tuple(int(d) for d in images.shape[1:])
    pixels = int(np.prod(self.image_shape))
    floats_per_example = (
        pixels * ((options.binarize == "dynamic") + (options.noise_factor > 0))
        + options.samples_per_example * options.latent_dim)
    # Examples on disk are read in `draw`, a call's worth at a time.
    self.sharded = isinstance(images, indexed.IndexedImages)
    bytes_per_step = options.global_batch_size * (
        4 * floats_per_example + 8 + pixels * self.sharded)
    self.steps_per_call = int(max(1, min(max_steps_per_call,
                                         draw_budget_bytes // bytes_per_step)))

  def draw(self, first_step) -> dict:
    """Orders and random draws of steps [first_step, +steps_per_call).

    Returns:
      Dict of tensors with a leading [steps_per_call] axis: `order`
      (int64 [steps, B]) and the `_random_draws` of each step.
    """
    batch = self.options.global_batch_size

    def one_step(step):
      return {"order": example_order(self.options, self.num_examples, step,
                                      0, batch),
              **random_draws(self.options, self.image_shape, step, 0, 0,
                              batch)}

    steps = (tf.cast(first_step, tf.int64)
             + tf.range(self.steps_per_call, dtype=tf.int64))
    images = tf.TensorSpec([batch, *self.image_shape], tf.float32)
    samples = ([self.options.samples_per_example]
               if self.options.samples_per_example > 1 else [])
    signature = {"order": tf.TensorSpec([batch], tf.int64),
                 "epsilon": tf.TensorSpec(
                     [batch, *samples, self.options.latent_dim], tf.float32)}
    if self.options.binarize == "dynamic":
      signature["binarize"] = images
    if self.options.noise_factor > 0:
      signature["input_noise"] = images
    draws = tf.map_fn(one_step, steps, fn_output_signature=signature)
    if self.sharded:
      # The next call's examples are read while this call's steps run.
      upcoming = tf.map_fn(
          lambda step: example_order(self.options, self.num_examples, step,
                                     0, batch),
          steps + self.steps_per_call,
          fn_output_signature=tf.TensorSpec([batch], tf.int64))
      draws["images"] = self.images.read_ahead(draws["order"], upcoming)
    return draws

  def batch(self, draws: dict) -> dict:
    """One step's batch from its row of `draw()`'s result (XLA-compilable)."""
    images = (draws["images"] if self.sharded else
              tf.gather(self.images, draws["order"]))
    batch = apply_draws(images, self.options, draws)
    if self.labels is not None:
      batch["labels"] = tf.gather(self.labels, draws["order"])
    return batch
