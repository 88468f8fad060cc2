"""tf.data pipelines whose every batch is a pure function of (seed, step).

A training batch is computed from its global step alone: the epoch's order is a
stateless permutation (`index_shuffle` keyed on seed and epoch), and dynamic
binarization, input noise and the reparameterization noise are stateless draws
keyed on (seed, stream, step). So a job restarted at step s, under any
strategy, sees exactly the batches it would have seen, with no iterator state
to checkpoint; and the union of the replicas' slices of a global batch is the
very batch a single-device run sees.

Images stay uint8 in memory (one copy) and are gathered per batch, then turned
into float32 in [0, 1] after batching.

Every element is a dict:
  inputs:  float32 [B, rows, cols, channels], what the encoder sees.
  targets: float32 [B, rows, cols, channels], what the decoder must explain
           (clean when input noise is on).
  epsilon: float32 [B, latent_dim], the reparameterization noise, or
           [B, K, latent_dim] with K > 1 samples per example.
  labels:  int64 [B], the examples' labels: in evaluation always, in
           training when the pipeline is given them (conditional models).
  weights, batch_index, offset (evaluation only): float32 weights [B], 0
           for the rows that pad the
           last global batch to full size; the global batch's index and this
           slice's offset in it, scalars that key further noise (see
           `engine.eval.likelihood`).
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np
import tensorflow as tf

from engine.data import indexed
from engine.data.draws import (ORDER_STREAM, apply_draws, random_draws,
                               stream_seed)
from engine.data.draws import PipelineOptions  # noqa: F401  (the pipeline's)

_EVAL_OFFSET = 100


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full batches per epoch (the remainder is dropped in training)."""
  return num_examples // global_batch_size


class _ReplicaLayout:
  """How one input pipeline's elements map onto replicas and global batches.

  Under `distribute_datasets_from_function` a pipeline feeds its local
  replicas consecutive elements, so element i of a pipeline is the slice of
  global batch `i // local_replicas` that belongs to replica
  `pipeline_id * local_replicas + i % local_replicas`.
  """

  def __init__(self, context: Optional[tf.distribute.InputContext],
               global_batch_size: int):
    if context is None:
      self.local_replicas, self.first_replica, replicas = 1, 0, 1
    else:
      replicas = context.num_replicas_in_sync
      self.local_replicas = replicas // context.num_input_pipelines
      self.first_replica = context.input_pipeline_id * self.local_replicas
    if global_batch_size % replicas:
      raise ValueError(f"global batch {global_batch_size} does not divide "
                       f"into {replicas} replicas")
    self.per_replica = global_batch_size // replicas

  def locate(self, element):
    """(batch index, offset of this element's slice within the batch)."""
    batch_index = element // self.local_replicas
    replica = self.first_replica + element % self.local_replicas
    return batch_index, replica * self.per_replica


def _preprocess(images_uint8, options: PipelineOptions, counter, stream_offset,
                offset, size):
  """uint8 global-batch slice -> dict(inputs, targets, epsilon), as floats."""
  return apply_draws(images_uint8, options, random_draws(
      options, tf.shape(images_uint8)[1:], counter, stream_offset, offset,
      size))


def example_order(options: PipelineOptions, num_examples: int, step,
                   first_in_batch, size) -> tf.Tensor:
  """Training-set indices of examples [first_in_batch, +size) of a step.

  Each epoch visits every example once in a stateless random order keyed on
  (seed, epoch); the remainder of an epoch that cannot fill a batch is
  skipped.
  """
  batches_per_epoch = steps_per_epoch(num_examples, options.global_batch_size)
  step = tf.cast(step, tf.int64)
  epoch = step // batches_per_epoch
  first = ((step % batches_per_epoch) * options.global_batch_size
           + tf.cast(first_in_batch, tf.int64))
  positions = tf.range(first, first + size, dtype=tf.int64)
  return tf.random.experimental.index_shuffle(
      positions, seed=stream_seed(options.seed, ORDER_STREAM, epoch),
      max_index=num_examples - 1)


def train_dataset(images: tf.Tensor, options: PipelineOptions,
                  start_step: int, end_step: int,
                  context: Optional[tf.distribute.InputContext] = None,
                  labels: Optional[tf.Tensor] = None) -> tf.data.Dataset:
  """Batches for global steps [start_step, end_step).

  Args:
    images: uint8 tensor [N, rows, cols, channels], the training set, or a
      `indexed.IndexedImages` (each batch then reads its examples).
    options: Pipeline options.
    start_step: First global step to produce (the resume position).
    end_step: One past the last step.
    context: The input context under tf.distribute (None: one pipeline).
    labels: int64 tensor [N], the training labels, for batches that carry
      them (None: no `labels`).

  Returns:
    A dataset of per-replica batches (see the module docstring).
  """
  num_examples = int(images.shape[0])
  batches_per_epoch = steps_per_epoch(num_examples, options.global_batch_size)
  if batches_per_epoch < 1:
    raise ValueError(f"{num_examples} training examples cannot fill one batch "
                     f"of {options.global_batch_size}")
  layout = _ReplicaLayout(context, options.global_batch_size)

  def make_batch(element):
    step, offset = layout.locate(element)
    order = example_order(options, num_examples, step, offset,
                           layout.per_replica)
    batch = _preprocess(indexed.gather(images, order), options, step, 0,
                        offset, layout.per_replica)
    if labels is not None:
      batch["labels"] = tf.gather(labels, order)
    return batch

  dataset = tf.data.Dataset.range(start_step * layout.local_replicas,
                                  end_step * layout.local_replicas)
  threads = _pipeline_threads()
  dataset = dataset.map(make_batch, num_parallel_calls=threads,
                        deterministic=True).prefetch(2 * threads)
  # A batch is a few hundred microseconds of work. Fixed, few threads of the
  # pipeline's own leave the cores to the training step; AUTOTUNE's threads
  # compete with it (measured: `vae-engine benchmark` reports real against
  # synthetic input).
  threading = tf.data.Options()
  threading.autotune.enabled = False
  threading.threading.private_threadpool_size = threads
  return dataset.with_options(threading)


def _pipeline_threads() -> int:
  """Threads that build training batches: a quarter of the cores, 1 to 4."""
  return max(1, min(4, (os.cpu_count() or 1) // 4))


def eval_dataset(images: tf.Tensor, labels: tf.Tensor, options: PipelineOptions,
                 context: Optional[tf.distribute.InputContext] = None
                 ) -> tf.data.Dataset:
  """The whole test split, in order, in full global batches, with weights.

  Every element has the same static shape, [global batch / replicas, ...],
  whichever replica it feeds: the last global batch is padded with copies of
  the last test example whose `weights` are 0, so no replica (or TPU core) is
  ever handed an empty or ragged tensor, and every consumer sums with
  `weights` so that counts and means cover exactly the real examples.

  Noise is keyed on the batch index with streams distinct from training, so
  evaluating the same weights twice gives the same numbers.

  Args:
    images: uint8 tensor [M, rows, cols, channels], or
      `indexed.IndexedImages` (each batch reads its examples).
    labels: int64 tensor [M].
    options: Pipeline options.
    context: The input context under tf.distribute (None: one pipeline).

  Returns:
    A dataset of per-replica batches with `labels` and `weights` (float32
    [B]: 1 for a test example, 0 for padding) added; each test example has
    weight 1 exactly once over all pipelines.
  """
  num_examples = int(images.shape[0])
  if num_examples < 1:
    raise ValueError("the test split is empty")
  batch = options.global_batch_size
  num_batches = -(-num_examples // batch)
  layout = _ReplicaLayout(context, batch)

  def make_batch(element):
    index, offset = layout.locate(element)
    positions = index * batch + offset + tf.range(layout.per_replica,
                                                  dtype=tf.int64)
    real = positions < num_examples
    rows = tf.minimum(positions, num_examples - 1)
    element = _preprocess(indexed.gather(images, rows), options, index,
                          _EVAL_OFFSET, offset, layout.per_replica)
    element["labels"] = tf.gather(labels, rows)
    element["weights"] = tf.cast(real, tf.float32)
    element["batch_index"] = index
    element["offset"] = tf.cast(offset, tf.int64)
    return element

  dataset = tf.data.Dataset.range(num_batches * layout.local_replicas).map(
      make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return dataset.prefetch(tf.data.AUTOTUNE)


def real_examples(element: dict) -> dict:
  """A (host) eval element without its padding rows, as numpy arrays.

  For code that looks at test examples one by one (figures, image
  summaries); compiled consumers weight by `weights` instead.
  """
  keep = np.asarray(element["weights"]) > 0
  return {key: (np.asarray(value)[keep] if np.ndim(value) else
                np.asarray(value))
          for key, value in element.items()}


def target_mean(images: np.ndarray, binarize: str) -> np.ndarray:
  """The expected training target per pixel, float32 [rows, cols, channels].

  Dynamic binarization's expectation is the grey level itself; static
  binarization's is the thresholded image's mean. Summed in integers, so
  the result does not depend on how the images are chunked (a converted
  dataset stores these sums).
  """
  sums = (images.pixel_sums() if isinstance(images, indexed.IndexedImages)
          else None)
  if sums is None:
    sums = np.zeros((2, *images.shape[1:]), np.int64)
    for start in range(0, len(images), 10_000):  # No copy of the whole set.
      part = np.asarray(images[start:start + 10_000])
      sums[0] += np.sum(part, axis=0, dtype=np.int64)
      sums[1] += np.sum(part >= 128, axis=0)  # x / 255 >= 0.5
  if binarize == "static":
    mean = sums[1] / max(len(images), 1)
  else:
    mean = sums[0] / 255.0 / max(len(images), 1)
  return mean.astype(np.float32)


def as_tensor(array: np.ndarray) -> tf.Tensor:
  """Moves a host array into one TF tensor (the pipeline's single copy); a
  sharded split stays on disk."""
  if isinstance(array, indexed.IndexedImages):
    return array
  return tf.convert_to_tensor(array)
