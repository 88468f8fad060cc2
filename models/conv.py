"""Seed 002 (the keras.io VAE): strided convolutions down, transposed up."""

import keras

from models import base
from models.registry import register


@register("conv", default_latent_dim=2, parameter_counts=(69_076, 65_089),
          description="Conv 32-64 (stride 2) -> Dense16 encoder, Dense 7x7x64 "
          "-> ConvTranspose 64-32-1 decoder (seed 002, keras.io).")
def build(image_shape, latent_dim):
  images, epsilon = base.encoder_inputs(image_shape, latent_dim)
  x = keras.layers.Conv2D(32, 3, strides=2, padding="same",
                          activation="relu")(images)
  x = keras.layers.Conv2D(64, 3, strides=2, padding="same",
                          activation="relu")(x)
  x = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(x))
  encoder = base.gaussian_encoder(images, epsilon, x, latent_dim)

  rows, cols, channels = image_shape
  if rows % 4 or cols % 4:
    raise ValueError(f"conv needs image sides divisible by 4, got {rows}x{cols}")
  z_in = keras.Input(shape=(latent_dim,), name="z")
  x = keras.layers.Dense((rows // 4) * (cols // 4) * 64, activation="relu")(z_in)
  x = keras.layers.Reshape((rows // 4, cols // 4, 64))(x)
  x = keras.layers.Conv2DTranspose(64, 3, strides=2, padding="same",
                                   activation="relu")(x)
  x = keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same",
                                   activation="relu")(x)
  logits = keras.layers.Conv2DTranspose(channels, 3, padding="same",
                                        name="logits", dtype="float32")(x)
  decoder = keras.Model(z_in, logits, name="decoder")
  return base.VariationalAutoencoder("conv", encoder, decoder)
