"""The negative ELBO, in nats per example, and its terms.

    -ELBO(x) = E_q[-log p(x | z)] + KL(q(z | x) || N(0, I))

The reconstruction term is a log-likelihood summed over pixels (not averaged:
averaging over 784 pixels while summing the KL over latent units weighs the
KL ~784x too much and collapses the posterior, as seed 000 does); the KL is
analytic. Everything is computed in float32 whatever the model's compute
dtype.
"""

from __future__ import annotations

import math

import tensorflow as tf

from engine.config import ModelConfig
from models.base import VariationalAutoencoder


def _sum_over_example(values: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def bernoulli_nll(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """-log Bernoulli(targets | sigmoid(logits)), summed per example [B]."""
  return _sum_over_example(tf.nn.sigmoid_cross_entropy_with_logits(
      labels=targets, logits=logits))


def gaussian_nll(targets: tf.Tensor, logits: tf.Tensor,
                 stddev: float) -> tf.Tensor:
  """-log N(targets | sigmoid(logits), stddev^2), summed per example [B]."""
  mean = tf.sigmoid(logits)
  per_pixel = (0.5 * tf.square((targets - mean) / stddev)
               + math.log(stddev) + 0.5 * math.log(2.0 * math.pi))
  return _sum_over_example(per_pixel)


def gaussian_kl(z_mean: tf.Tensor, z_log_var: tf.Tensor) -> tf.Tensor:
  """KL(N(z_mean, exp(z_log_var)) || N(0, I)), summed over latents [B]."""
  return 0.5 * tf.reduce_sum(
      tf.exp(z_log_var) + tf.square(z_mean) - 1.0 - z_log_var, axis=1)


def reconstruction_nll(config: ModelConfig, targets: tf.Tensor,
                       logits: tf.Tensor) -> tf.Tensor:
  """The configured likelihood's negative log, summed per example [B]."""
  logits = tf.cast(logits, tf.float32)
  if config.reconstruction_loss == "bernoulli":
    return bernoulli_nll(targets, logits)
  if config.reconstruction_loss == "gaussian":
    return gaussian_nll(targets, logits, config.gaussian_stddev)
  raise ValueError(f"unknown reconstruction loss "
                   f"{config.reconstruction_loss!r}")


def per_example_terms(vae: VariationalAutoencoder, config: ModelConfig,
                      batch: dict, training: bool) -> dict[str, tf.Tensor]:
  """Runs the model on a batch and returns per-example loss terms.

  Args:
    vae: The model.
    config: Supplies the likelihood and beta.
    batch: A pipeline element (inputs, targets, epsilon).
    training: Passed to the Keras models.

  Returns:
    float32 tensors of shape [B]: `loss` (reconstruction + beta * kl, what is
    minimized), `reconstruction`, `kl` and `elbo` (-(reconstruction + kl)).
  """
  z_mean, z_log_var, z = vae.encoder([batch["inputs"], batch["epsilon"]],
                                     training=training)
  logits = vae.decoder(z, training=training)
  reconstruction = reconstruction_nll(config, batch["targets"], logits)
  kl = gaussian_kl(tf.cast(z_mean, tf.float32), tf.cast(z_log_var, tf.float32))
  return {
      "loss": reconstruction + config.beta * kl,
      "reconstruction": reconstruction,
      "kl": kl,
      "elbo": -(reconstruction + kl),
  }
