"""The learned per-sub-pixel scale of the likelihoods that need one
(discretized logistic, Gaussian with a learned variance), as a layer of the
decoder."""

from __future__ import annotations

import dataclasses

import keras


# exp(-2) ~ 0.14 of the [-1, 1] range: about 17 grey levels either side of
# the mean. A scale of 1 (log 0) starts broader than a uniform over the 256
# levels, and Adam moves a log-scale by ~lr a step, so it would take
# thousands of steps to reach the data's spread.
INITIAL_LOG_SCALE = -2.0


@keras.saving.register_keras_serializable(package="vae_engine")
class LearnedScale(keras.layers.Layer):
  """Holds a learned log-scale per sub-pixel for the likelihoods that need
  one (discretized logistic, Gaussian with a learned variance); passes the
  decoder's logits through unchanged. Inside the decoder, so checkpoints,
  exports and the optimizer see it like any other weight."""

  def build(self, input_shape):
    self.log_scale = self.add_weight(name="log_scale",
                                     shape=tuple(input_shape[1:]),
                                     initializer=keras.initializers.Constant(
                                         INITIAL_LOG_SCALE),
                                     dtype="float32")

  def call(self, logits):
    return logits


def with_learned_scale(vae):
  """The same model with a `LearnedScale` after its decoder."""
  z = keras.Input(shape=(vae.latent_dim,), name="z")
  outputs = vae.decoder(z)
  # A hierarchical decoder's prior moments pass by unchanged.
  rest = list(outputs[1:]) if isinstance(outputs, (list, tuple)) else None
  logits = LearnedScale(name="learned_scale", dtype="float32")(
      outputs[0] if rest is not None else outputs)
  decoder = keras.Model(z, [logits, *rest] if rest is not None else logits,
                        name="decoder_with_scale")
  return dataclasses.replace(vae, decoder=decoder)
