"""Seed 004: denoising VAE; one Dense(2 * latent) head split into mean / log-var.

Trained on noisy inputs against clean targets (the engine adds the noise; the
default `--noise_factor` for this model is the tutorial's 0.2).
"""

import keras
from keras import ops

from models import base
from models.registry import register


@register("denoising", default_latent_dim=40,
          parameter_counts=(442_960, 423_184), default_noise_factor=0.2,
          description="Dense 512 encoder with a joint mean/log-var head, 512 "
          "decoder, trained on noisy inputs (seed 004).")
def build(image_shape, latent_dim, hidden_dim=512):
  images, epsilon = base.encoder_inputs(image_shape, latent_dim)
  h = keras.layers.Dense(hidden_dim, activation="relu", name="hidden")(
      keras.layers.Flatten()(images))
  moments = keras.layers.Dense(2 * latent_dim, name="moments")(h)
  encoder = base.encoder_model(images, epsilon,
                               *ops.split(moments, 2, axis=-1))
  decoder = base.dense_decoder(image_shape, latent_dim, (hidden_dim,))
  return base.VariationalAutoencoder("denoising", encoder, decoder)
