"""Burda et al. (2015)'s one-stochastic-layer network, for comparison with
their Table 1 (VAE k=1: 86.76 nats; IWAE k=50: 84.78 on dynamically binarized
MNIST).

784-200-200-50 with tanh: a Gaussian encoder (mean and log-variance heads) and
a Bernoulli decoder mirroring it, whose output bias starts at the logit of the
training set's mean pixel values, as in the paper's code.
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from models import base
from models.registry import register

HIDDEN_UNITS = (200, 200)
# Keeps the initial logits finite for pixels that are always 0 or 1.
_MEAN_CLIP = 1e-3


def _tanh_stack(x, name):
  for i, width in enumerate(HIDDEN_UNITS):
    x = keras.layers.Dense(width, activation="tanh", name=f"{name}_{i}")(x)
  return x


def output_bias(pixel_mean: np.ndarray) -> np.ndarray:
  """logit(mean), the decoder bias that makes the untrained model predict the
  data's mean image; flattened, float32."""
  p = np.clip(np.asarray(pixel_mean, np.float64).reshape(-1), _MEAN_CLIP,
              1.0 - _MEAN_CLIP)
  return np.log(p / (1.0 - p)).astype(np.float32)


@register("iwae_mlp", default_latent_dim=50,
          parameter_counts=(217_300, 207_984), initializes_from_data=True,
          description="Burda et al.'s 784-200-200-50 tanh VAE (IWAE paper, "
          "Table 1).")
def build(image_shape, latent_dim, pixel_mean: Optional[np.ndarray] = None):
  """Builds the network.

  Args:
    image_shape: Shape of one image.
    latent_dim: Size of z (50 in the paper).
    pixel_mean: Mean of the training targets per pixel, in [0, 1]; the
      decoder's output bias starts at its logit (zeros when None, e.g. when a
      checkpoint is about to be restored anyway).

  Returns:
    A `VariationalAutoencoder`.
  """
  images, epsilon = base.encoder_inputs(image_shape, latent_dim)
  encoder = base.gaussian_encoder(
      images, epsilon, _tanh_stack(keras.layers.Flatten()(images), "encoder"),
      latent_dim)

  num_pixels = int(np.prod(image_shape))
  bias = (output_bias(pixel_mean) if pixel_mean is not None
          else np.zeros([num_pixels], np.float32))
  z_input = keras.Input(shape=(latent_dim,), name="z")
  logits = keras.layers.Dense(
      num_pixels, name="logits", dtype="float32",
      bias_initializer=keras.initializers.Constant(bias))(
          _tanh_stack(z_input, "decoder"))
  logits = keras.layers.Reshape(image_shape, name="image_logits")(logits)
  decoder = keras.Model(z_input, logits, name="decoder")
  return base.VariationalAutoencoder("iwae_mlp", encoder, decoder)
