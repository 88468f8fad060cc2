"""What every model builder returns, and the pieces builders share.

A model is a pair of Keras models with a fixed contract, so the engine can
train, evaluate and export any of them without knowing its architecture:

* `encoder([images, epsilon]) -> [z_mean, z_log_var, z]`. The reparameterization
  noise `epsilon` is an input, not drawn inside the model: the engine draws it
  from a stateless RNG keyed on (seed, step, replica), which keeps runs
  reproducible, gives every replica its own noise and survives tf.distribute
  and SavedModel export (Keras-3 layers that call `keras.random` do not).
* `decoder(z) -> logits` with the images' shape. Logits, not probabilities: the
  likelihood is computed from logits for numerical stability, and the export
  applies the sigmoid.

A conditional model (`models.conditional`) takes a one-hot label as one more
input of each. Callers go through `VariationalAutoencoder`'s operations,
which take integer labels (ignored by an unconditional model), and never call
the Keras models directly.
"""

from __future__ import annotations

import dataclasses
import math

import keras
from keras import ops

from models.learned_scale import LearnedScale


def reparameterize(inputs):
  """z = mean + exp(log_var / 2) * epsilon, the reparameterization trick.

  Args:
    inputs: A sequence `(z_mean, z_log_var, epsilon)` of equal-shape tensors.

  Returns:
    The latent sample z.
  """
  z_mean, z_log_var, epsilon = inputs
  return z_mean + ops.exp(0.5 * z_log_var) * ops.cast(epsilon, z_mean.dtype)


@keras.saving.register_keras_serializable(package="vae_engine")
class Reparameterize(keras.layers.Layer):
  """Layer form of `reparameterize`: deterministic given its noise input."""

  def call(self, inputs):
    return reparameterize(inputs)


@dataclasses.dataclass(frozen=True)
class VariationalAutoencoder:
  """A built model: the encoder and decoder described in the module docstring.

  Attributes:
    name: The registry name it was built under.
    encoder: `[images, epsilon] -> [z_mean, z_log_var, z]`
      (conditional: `[images, one_hot, epsilon]`).
    decoder: `z -> logits` of the images' shape (conditional:
      `[z, one_hot]`).
    num_classes: K for a conditional model, 0 for an unconditional one.
  """

  name: str
  encoder: keras.Model
  decoder: keras.Model
  num_classes: int = 0

  @property
  def conditional(self) -> bool:
    return self.num_classes > 0

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.encoder.inputs[0].shape[1:])

  @property
  def latent_dim(self) -> int:
    return int(self.decoder.inputs[0].shape[-1])

  @property
  def hierarchical(self) -> bool:
    """Several latent groups with a learned prior (`models.hierarchy`);
    False: one group, prior N(0, I), the KL analytic."""
    return False

  @property
  def latent_groups(self) -> tuple[int, ...]:
    """The latent groups' sizes, the top group last (here one group)."""
    return tuple(getattr(self, "group_sizes", ())) or (self.latent_dim,)

  @property
  def top_group(self) -> slice:
    """The top group's columns of z (here all of them)."""
    return slice(0, self.latent_dim)

  def prior_sample(self, epsilon):
    """z ~ p(z) from standard noise [N, D], float32: the noise itself."""
    return ops.cast(epsilon, "float32")

  def complete_from_top(self, z_top):
    """The whole z for a top-group code: here the code itself."""
    return ops.cast(z_top, "float32")

  @property
  def top_dim(self) -> int:
    """Size of the top group, the code the figures show."""
    return self.top_group.stop - self.top_group.start

  def top_mean(self, images, labels=None):
    """The top group's posterior mean, float32 [N, top_dim]."""
    return self.posterior_mean(images, labels)[:, self.top_group]

  def decode_top(self, z_top, labels=None):
    """Pixel probabilities for a top-group code (lower groups at their prior
    means)."""
    return self.decoder_probabilities(self.complete_from_top(z_top), labels)

  @property
  def trainable_variables(self) -> list:
    return self.encoder.trainable_variables + self.decoder.trainable_variables

  def count_params(self) -> tuple[int, int]:
    """Returns (encoder, decoder) parameter counts."""
    return self.encoder.count_params(), self.decoder.count_params()

  # The operations every consumer needs (training, export, likelihood,
  # figures, tools), so none of them rewrites them. `labels` are int
  # [N]; an unconditional model ignores them. Outputs other than `encode`'s
  # are float32 whatever the compute dtype.

  def _one_hot(self, labels):
    if labels is None:
      raise ValueError(f"this {self.name} model is conditional on "
                       f"{self.num_classes} classes: pass labels")
    return ops.one_hot(ops.cast(labels, "int32"), self.num_classes)

  def encode(self, images, epsilon, labels=None, training: bool = False):
    """(z_mean, z_log_var, z) in the compute dtype, z = mean + std * epsilon."""
    if self.conditional:
      # Keras refuses a list mixing arrays and tensors.
      images, epsilon = ops.convert_to_tensor(images), ops.convert_to_tensor(
          epsilon)
      return self.encoder([images, self._one_hot(labels), epsilon],
                          training=training)
    return self.encoder([images, epsilon], training=training)

  def posterior(self, images, labels=None, training: bool = False):
    """q(z | x (, y))'s moments: (z_mean, z_log_var), float32 [N, latent]."""
    zeros = ops.zeros((ops.shape(images)[0], self.latent_dim))
    z_mean, z_log_var, _ = self.encode(images, zeros, labels, training)
    return ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")

  def posterior_mean(self, images, labels=None):
    """E_q[z | x (, y)], float32 [N, latent] (the encoder with zero noise)."""
    return self.posterior(images, labels)[0]

  def decoder_logits(self, z, labels=None, training: bool = False):
    """The decoder's logits, float32, of the images' shape."""
    if self.conditional:
      logits = self.decoder([ops.convert_to_tensor(z), self._one_hot(labels)],
                            training=training)
    else:
      logits = self.decoder(z, training=training)
    return ops.cast(logits, "float32")

  def decoder_probabilities(self, z, labels=None):
    """Pixel probabilities (Bernoulli means) in [0, 1], float32."""
    return ops.sigmoid(self.decoder_logits(z, labels))

  @property
  def has_convolutions(self) -> bool:
    """Any convolution (or transposed one) in the encoder or decoder."""
    return any(isinstance(layer, _CONVOLUTIONS)
               for layer in _all_layers(self.encoder, self.decoder))

  @property
  def log_scale(self):
    """The learned per-sub-pixel log-scale, or None (see `LearnedScale`)."""
    # A conditional decoder holds the builder's as a layer.
    for layer in _all_layers(self.decoder):
      if isinstance(layer, LearnedScale):
        return layer.log_scale
    return None


_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                 keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
                 keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv2D,
                 keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)


def output_floats(model) -> int:
  """Floats per example of every layer's outputs (nested models included):
  what one example's forward pass holds at most. Raises AttributeError or
  ValueError for a layer whose output is not known from its graph."""
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      total += output_floats(layer)
      continue
    for output in keras.tree.flatten(layer.output):
      total += math.prod(d or 1 for d in output.shape[1:])
  return total


def decoder_floats(vae: "VariationalAutoencoder"):
  """`output_floats` of the decoder; None where a layer's output is unknown
  (a subclassed Keras model's, say)."""
  try:
    return output_floats(vae.decoder)
  except (AttributeError, ValueError):
    return None


def _all_layers(*models):
  """Every layer of the models, nested models' included."""
  pending = list(models)
  while pending:
    layer = pending.pop()
    yield layer
    pending.extend(getattr(layer, "layers", []))


def encoder_inputs(image_shape, latent_dim):
  """The two inputs every encoder takes: images and reparameterization noise."""
  images = keras.Input(shape=image_shape, name="images")
  epsilon = keras.Input(shape=(latent_dim,), name="epsilon")
  return images, epsilon


def gaussian_encoder(images, epsilon, features, latent_dim: int,
                     sampling=None) -> keras.Model:
  """The encoder head every builder shares: features -> (z_mean, z_log_var)
  by two Dense layers, z by the reparameterization trick.

  Args:
    images, epsilon: The encoder's inputs (`encoder_inputs`).
    features: The last hidden tensor computed from `images`.
    latent_dim: Size of z.
    sampling: The layer computing z from [z_mean, z_log_var, epsilon]
      (default: `Reparameterize`).
  """
  z_mean = keras.layers.Dense(latent_dim, name="z_mean")(features)
  z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(features)
  return encoder_model(images, epsilon, z_mean, z_log_var, sampling)


def encoder_model(images, epsilon, z_mean, z_log_var,
                  sampling=None) -> keras.Model:
  """`[images, epsilon] -> [z_mean, z_log_var, z]` as the contract says."""
  sampling = sampling or Reparameterize(name="z")
  z = sampling([z_mean, z_log_var, epsilon])
  return keras.Model([images, epsilon], [z_mean, z_log_var, z],
                     name="encoder")


def dense_stack(x, units, name):
  """Applies ReLU Dense layers of the given widths, named `{name}_{i}`."""
  for i, width in enumerate(units):
    x = keras.layers.Dense(width, activation="relu", name=f"{name}_{i}")(x)
  return x


def mlp_vae(name, image_shape, latent_dim, encoder_units, decoder_units):
  """A fully connected VAE with separate z_mean / z_log_var heads.

  Args:
    name: Registry name.
    image_shape: Shape of one image, e.g. (28, 28, 1).
    latent_dim: Size of z.
    encoder_units: Widths of the encoder's hidden ReLU layers.
    decoder_units: Widths of the decoder's hidden ReLU layers.

  Returns:
    A `VariationalAutoencoder`.
  """
  images, epsilon = encoder_inputs(image_shape, latent_dim)
  h = dense_stack(keras.layers.Flatten()(images), encoder_units, "encoder")
  encoder = gaussian_encoder(images, epsilon, h, latent_dim)
  return VariationalAutoencoder(
      name, encoder, dense_decoder(image_shape, latent_dim, decoder_units))


def dense_decoder(image_shape, latent_dim, units):
  """z -> ReLU Dense layers -> Dense(prod(image_shape)) logits, reshaped."""
  z = keras.Input(shape=(latent_dim,), name="z")
  h = dense_stack(z, units, "decoder")
  num_pixels = 1
  for dim in image_shape:
    num_pixels *= dim
  logits = keras.layers.Dense(num_pixels, name="logits", dtype="float32")(h)
  logits = keras.layers.Reshape(image_shape, name="image_logits")(logits)
  return keras.Model(z, logits, name="decoder")
