"""Conditional VAEs (Sohn, Lee & Yan, 2015) from any registered builder.

    q(z | x, y) and p(x | z, y), with y a one-hot class label.

One mechanism serves every builder, so no model is written twice: the builder
is called once for an encoder whose images carry K more channels, the label
broadcast over every pixel (for a convolution, a per-class bias at every
position; for a dense layer, the label concatenated to its input, repeated once per
pixel: more first-layer weights than a plain concatenation, the same
functions), and once for a decoder whose latent input is K wider, [z, y]. The wrapped models take
the label as one more input:

* `encoder([images, one_hot, epsilon]) -> [z_mean, z_log_var, z]`;
* `decoder([z, one_hot]) -> logits`.

`VariationalAutoencoder`'s operations take integer labels and do the one-hot
encoding, so callers never see it.
"""

from __future__ import annotations

import keras
from keras import ops

from models.base import VariationalAutoencoder


@keras.saving.register_keras_serializable(package="vae_engine")
class LabelPlanes(keras.layers.Layer):
  """[N, K] one-hot labels -> [N, rows, cols, K], constant over each plane."""

  def __init__(self, rows: int, cols: int, **kwargs):
    super().__init__(**kwargs)
    self.rows, self.cols = rows, cols

  def call(self, one_hot):
    planes = one_hot[:, None, None, :]
    return ops.broadcast_to(planes, (ops.shape(one_hot)[0], self.rows,
                                     self.cols, ops.shape(one_hot)[-1]))

  def get_config(self):
    return {**super().get_config(), "rows": self.rows, "cols": self.cols}


def labelled_image_shape(image_shape: tuple, num_classes: int) -> tuple:
  """The shape of an image with its label's K planes appended."""
  *sides, channels = image_shape
  return (*sides, channels + num_classes)


def conditional(encoder_model: VariationalAutoencoder,
                decoder_model: VariationalAutoencoder,
                num_classes: int) -> VariationalAutoencoder:
  """Joins a builder's two calls into a label-conditional model.

  Args:
    encoder_model: The builder's model for images with
      `labelled_image_shape` channels; its encoder is used.
    decoder_model: The builder's model with a latent size of
      `latent_dim + num_classes`; its decoder is used (with any learned scale
      already attached).
    num_classes: K, the number of labels.

  Returns:
    A `VariationalAutoencoder` with `num_classes` set.

  Raises:
    ValueError: If the two models' shapes do not fit together.
  """
  if num_classes < 2:
    raise ValueError(f"a conditional model needs at least 2 classes, got "
                     f"{num_classes}")
  labelled_shape = encoder_model.image_shape
  *sides, channels = labelled_shape
  image_shape = (*sides, channels - num_classes)
  latent_dim = decoder_model.latent_dim - num_classes
  if len(sides) != 2 or channels <= num_classes or latent_dim < 1:
    raise ValueError(
        f"encoder images {labelled_shape} and decoder latent size "
        f"{decoder_model.latent_dim} do not fit {num_classes} classes")

  images = keras.Input(shape=image_shape, name="images")
  one_hot = keras.Input(shape=(num_classes,), name="labels")
  epsilon = keras.Input(shape=(latent_dim,), name="epsilon")
  planes = LabelPlanes(*sides, name="label_planes")(one_hot)
  labelled = keras.layers.Concatenate(axis=-1, name="images_and_labels")(
      [images, planes])
  encoder = keras.Model([images, one_hot, epsilon],
                        encoder_model.encoder([labelled, epsilon]),
                        name="conditional_encoder")

  z = keras.Input(shape=(latent_dim,), name="z")
  decoder_labels = keras.Input(shape=(num_classes,), name="labels")
  z_and_labels = keras.layers.Concatenate(axis=-1, name="z_and_labels")(
      [z, decoder_labels])
  decoder = keras.Model([z, decoder_labels],
                        decoder_model.decoder(z_and_labels),
                        name="conditional_decoder")
  return VariationalAutoencoder(decoder_model.name, encoder, decoder,
                                num_classes=num_classes)
