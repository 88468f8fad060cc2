"""Models with several Gaussian latent groups and a learned prior over them.

The contract of `models.base` with the latent z the concatenation of groups
z_1, ..., z_L (`group_sizes`, from the one nearest the images to the top):

* `encoder([images, epsilon]) -> [z_mean, z_log_var, z]`, concatenated over
  the groups, each group reparameterized from its own slice of epsilon
  (`NoiseSlice`): z_g = mean_g + exp(log_var_g / 2) * epsilon_g. A group's
  moments may depend on the images and on other groups' samples (Burda et
  al.'s bottom-up q(z_1 | x) q(z_2 | z_1), or any other order), so
  log q(z | x) = sum_g log N(z_g; mean_g, var_g) whatever the order.
* `decoder(z) -> [logits, prior_mean, prior_log_var]`: p(x | z) from the
  logits, and the prior p(z_g | z_>g) of every group as a diagonal Gaussian
  of the concatenated shape, group g's moments a function of the groups above
  it only (the top group's usually 0 and 0: N(0, I)). The contract checker
  (`models.contract`) tests that ordering, which ancestral sampling needs.

The posterior "means" the engine reports per group (active units, the
export's `encode`, the figures' codes) are the encoder's with zero noise: a
group above another is given the lower groups at their means, not averaged
over them.

There is no analytic KL between q and such a prior, so the objectives use the
sampled log-densities (`engine.objectives.elbo.sampled_terms`): the KL of
each unit is log q(z_u | .) - log p(z_u | z_>g), its Monte-Carlo estimate.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf
from keras import ops

from models import base


@keras.saving.register_keras_serializable(package="vae_engine")
class NoiseSlice(keras.layers.Layer):
  """Columns [start, start + size) of the noise: one group's epsilon (or of
  z: one group's part). float32 whatever the compute dtype: the objectives
  take log q from the float32 noise, so z must be made from that noise."""

  def __init__(self, start: int, size: int, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.start, self.size = start, size

  def call(self, epsilon):
    return epsilon[:, self.start:self.start + self.size]

  def get_config(self):
    return {**super().get_config(), "start": self.start, "size": self.size}


@keras.saving.register_keras_serializable(package="vae_engine")
class StandardPrior(keras.layers.Layer):
  """The top group's prior N(0, I): zero mean and log-variance for a batch,
  shaped like its input (any tensor with the batch dimension first)."""

  def __init__(self, size: int, **kwargs):
    super().__init__(**kwargs)
    self.size = size

  def call(self, like):
    zeros = ops.zeros((ops.shape(like)[0], self.size), dtype=like.dtype)
    return [zeros, zeros]

  def get_config(self):
    return {**super().get_config(), "size": self.size}


def noise_slices(epsilon, group_sizes) -> list:
  """Each group's epsilon, in `group_sizes`' order."""
  slices, start = [], 0
  for index, size in enumerate(group_sizes):
    slices.append(NoiseSlice(start, size, name=f"epsilon_{index + 1}")(
        epsilon))
    start += size
  return slices


def gaussian_group(features, epsilon, size: int, index: int):
  """(mean, log_var, z) of group `index` (1-based) from features."""
  mean = keras.layers.Dense(size, name=f"z{index}_mean")(features)
  log_var = keras.layers.Dense(size, name=f"z{index}_log_var")(features)
  # In float32: under a mixed policy a z rounded to bfloat16 would not be
  # the z whose density log q is taken from the noise.
  z = base.Reparameterize(name=f"z{index}", dtype="float32")(
      [mean, log_var, epsilon])
  return mean, log_var, z


def concatenate(tensors, name):
  """The groups side by side, in float32 (see `gaussian_group`)."""
  return keras.layers.Concatenate(name=name, dtype="float32")(list(tensors))


@dataclasses.dataclass(frozen=True)
class HierarchicalVAE(base.VariationalAutoencoder):
  """A built hierarchical model (the module docstring's contract).

  Attributes:
    group_sizes: The latent groups' sizes, the one nearest the images first,
      the top group last; they add up to `latent_dim`.
  """

  group_sizes: tuple = ()

  @property
  def hierarchical(self) -> bool:
    return True

  @property
  def top_group(self) -> slice:
    """The top group's columns of z."""
    return slice(self.latent_dim - self.group_sizes[-1], self.latent_dim)

  def group_slices(self) -> list[slice]:
    """Each group's columns of z, in `group_sizes`' order."""
    slices, start = [], 0
    for size in self.group_sizes:
      slices.append(slice(start, start + size))
      start += size
    return slices

  def decoder_outputs(self, z, labels=None, training: bool = False):
    """(logits, prior_mean, prior_log_var), float32."""
    del labels  # Hierarchical models are unconditional (`ModelSpec.create`).
    return tuple(ops.cast(t, "float32")
                 for t in self.decoder(z, training=training))

  def decoder_logits(self, z, labels=None, training: bool = False):
    return self.decoder_outputs(z, labels, training)[0]

  def prior_moments(self, z, training: bool = False):
    """p(z_g | z_>g)'s (mean, log_var) for every group, float32 [N, D]."""
    return self.decoder_outputs(z, training=training)[1:]

  def prior_sample(self, epsilon):
    """Ancestral draws z ~ p(z), top group first, from standard noise
    [N, D]: each pass fixes one more group, since a group's prior depends
    only on the groups above it."""
    epsilon = tf.cast(epsilon, tf.float32)
    z = epsilon
    for _ in self.group_sizes:
      mean, log_var = self.prior_moments(z)
      z = mean + tf.exp(0.5 * log_var) * epsilon
    return z

  def complete_from_top(self, z_top):
    """The whole z for a top-group code [N, size of the top group]: the
    lower groups at their prior means given the groups above."""
    z_top = tf.cast(z_top, tf.float32)
    lower = self.latent_dim - self.group_sizes[-1]
    z = tf.concat([tf.zeros([tf.shape(z_top)[0], lower]), z_top], axis=1)
    for _ in self.group_sizes[:-1]:
      mean, _ = self.prior_moments(z)
      z = tf.concat([mean[:, :lower], z_top], axis=1)
    return z
