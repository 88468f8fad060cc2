"""Seed 001: functional encoder with a `Lambda` reparameterization layer.

The tutorial's Lambda drew its noise with the backend RNG inside the layer.
Under Keras 3 that breaks MirroredStrategy (the RNG state is not a mirrored
variable) and `tf.saved_model.save` (the layer's random op captures state that
does not trace). Here the Lambda is a pure function of (z_mean, z_log_var,
epsilon), with epsilon an input of the model: it keeps the tutorial's
structure (sampling inside the encoder model) and works under tf.function,
tf.distribute and export.
"""

import keras

from models import base
from models.registry import register


@register("lambda", default_latent_dim=2, parameter_counts=(403_972, 403_728),
          description="Dense 512 encoder with an in-model Lambda sampling "
          "layer, 512 decoder (seed 001).")
def build(image_shape, latent_dim, intermediate_dim=512):
  images, epsilon = base.encoder_inputs(image_shape, latent_dim)
  h = keras.layers.Dense(intermediate_dim, activation="relu", name="hidden")(
      keras.layers.Flatten()(images))
  encoder = base.gaussian_encoder(
      images, epsilon, h, latent_dim,
      sampling=keras.layers.Lambda(base.reparameterize,
                                   output_shape=(latent_dim,),
                                   name="sampling"))
  decoder = base.dense_decoder(image_shape, latent_dim, (intermediate_dim,))
  return base.VariationalAutoencoder("lambda", encoder, decoder)
