"""The stateless random draws of a batch, and how they make it.

Every random number a batch uses is a stateless draw keyed on (seed,
stream, counter): the training step or the evaluation batch. Dynamic
binarization, input noise and the reparameterization noise are drawn for
the whole global batch and sliced, so an example's noise does not depend on
which replica processes it, and the batches built inside an XLA step
(`step_batches`) are the tf.data pipeline's (`pipeline`) bit for bit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

# Independent random streams, folded into the seed.
ORDER_STREAM, _BINARIZE, _INPUT_NOISE, _EPSILON = 1, 2, 3, 4
# uint8 grey level -> float32 level / 255, correctly rounded. A table rather
# than a division: XLA turns `x / 255` into `x * (1 / 255)`, which rounds
# differently, and batches built inside an XLA step must equal tf.data's.
_GREY_LEVELS = np.arange(256, dtype=np.float32) / np.float32(255)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
  """What the pipeline needs to know.

  Attributes:
    global_batch_size: Examples per step, summed over replicas.
    seed: The run's seed.
    binarize: `none`, `static` or `dynamic`.
    noise_factor: Std-dev of the input noise (0: none).
    latent_dim: Width of the reparameterization noise.
    samples_per_example: K, how many draws of the noise each example gets.
  """

  global_batch_size: int
  seed: int
  binarize: str
  noise_factor: float
  latent_dim: int
  samples_per_example: int = 1


def stream_seed(seed: int, stream: int, counter) -> tf.Tensor:
  """A length-2 stateless seed for `stream` at `counter` (a step or batch)."""
  base = tf.constant([seed, stream], dtype=tf.int64)
  return tf.random.experimental.stateless_fold_in(
      base, tf.cast(counter, tf.int64))



def random_draws(options: PipelineOptions, image_shape, counter,
                  stream_offset, offset, size) -> dict:
  """The random numbers a global-batch slice uses, keyed on (seed, counter).

  Draws are made for the whole global batch and sliced, so an example's noise
  does not depend on which replica processes it.

  Returns:
    Dict with `epsilon` and, when configured, `binarize` (uniforms) and
    `input_noise` (standard normals), each [size, ...].
  """
  global_shape = tf.concat([[options.global_batch_size], image_shape], axis=0)

  def rows(draw):
    # Slices this batch's rows, keeping the static size (`size` is a Python
    # int) that a sliced tensor with a tensor offset would lose.
    part = draw[offset:offset + size]
    part.set_shape([size] + part.shape.as_list()[1:])
    return part

  draws = {}
  if options.binarize == "dynamic":
    draws["binarize"] = rows(tf.random.stateless_uniform(
        global_shape, stream_seed(options.seed, stream_offset + _BINARIZE,
                                   counter)))
  if options.noise_factor > 0:
    draws["input_noise"] = rows(tf.random.stateless_normal(
        global_shape, stream_seed(options.seed, stream_offset + _INPUT_NOISE,
                                   counter)))
  samples = ([options.samples_per_example]
             if options.samples_per_example > 1 else [])
  draws["epsilon"] = rows(tf.random.stateless_normal(
      [options.global_batch_size, *samples, options.latent_dim],
      stream_seed(options.seed, stream_offset + _EPSILON, counter)))
  return draws


def apply_draws(images_uint8, options: PipelineOptions, draws: dict) -> dict:
  """uint8 images + their random draws -> dict(inputs, targets, epsilon).

  Deterministic arithmetic only, so it may run inside an XLA step.
  """
  # The arithmetic runs on [B, sub-pixels]: with one channel innermost,
  # XLA:CPU makes a scalar loop of a 4-D elementwise op, a vectorized one of
  # a 2-D op. Same values either way (compares, casts and one multiply-add).
  shape = tf.shape(images_uint8)
  flat = [shape[0], -1]
  targets = tf.gather(tf.constant(_GREY_LEVELS),
                      tf.cast(tf.reshape(images_uint8, flat), tf.int32))
  if options.binarize == "static":
    targets = tf.cast(targets >= 0.5, tf.float32)
  elif options.binarize == "dynamic":
    targets = tf.cast(tf.reshape(draws["binarize"], flat) < targets,
                      tf.float32)
  inputs = targets
  if options.noise_factor > 0:
    inputs = tf.clip_by_value(
        targets + options.noise_factor * tf.reshape(draws["input_noise"],
                                                    flat),
        0.0, 1.0)
  return {"inputs": tf.reshape(inputs, shape),
          "targets": tf.reshape(targets, shape),
          "epsilon": draws["epsilon"]}
