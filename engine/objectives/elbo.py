"""The negative ELBO, in nats per example, and its terms.

    -ELBO(x) = E_q[-log p(x | z)] + KL(q(z | x) || N(0, I))

The reconstruction term is a log-likelihood summed over pixels (not averaged:
averaging over 784 pixels while summing the KL over latent units weighs the
KL ~784x too much and collapses the posterior, as seed 000 does); the KL is
analytic. Everything is computed in float32 whatever the model's compute
dtype.

With K samples per example (epsilon of shape [B, K, D]) the same model gives
importance weights w_k = p(x, z_k) / q(z_k | x), and

    log p(x) >= IWAE_K(x) = log (1/K) sum_k w_k      (Burda et al., 2015)

which is the ELBO's Monte-Carlo estimate at K = 1 and tends to log p(x) as K
grows. `--objective=iwae` trains on it; `engine.eval.likelihood` evaluates it with
K = 5000 as the test log-likelihood.

Tensors in, tensors out: what is computed is an `Objective`, not a run's
configuration (the build step makes one from the flags).
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from engine.objectives import pixel_likelihoods
from models.base import VariationalAutoencoder

# The per-example terms every objective returns, in this order.
TERMS = ("loss", "reconstruction", "kl", "elbo")


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a batch's loss is.

  Attributes:
    likelihood: p(x | z): `pixel_likelihoods.LIKELIHOODS`.
    gaussian_stddev: The fixed std-dev of the `gaussian` likelihood.
    objective: `elbo`, or `iwae` (the K-sample importance-weighted bound).
    beta: The KL's weight in the loss.
    free_bits: Nats per latent unit charged at least (ELBO only; 0: off).
  """

  likelihood: str = "bernoulli"
  gaussian_stddev: float = 0.1
  objective: str = "elbo"
  beta: float = 1.0
  free_bits: float = 0.0

  def for_evaluation(self) -> "Objective":
    """The ELBO itself (beta 1, no free bits), as evaluation reports it."""
    return dataclasses.replace(self, objective="elbo", beta=1.0,
                               free_bits=0.0)

  def reconstruction_nll(self, targets, logits, log_scale=None) -> tf.Tensor:
    """-log p(targets | logits (, log_scale)), summed per example [B]."""
    return pixel_likelihoods.negative_log_likelihood(
        self.likelihood, targets, logits, log_scale, self.gaussian_stddev)


def gaussian_kl_per_unit(z_mean: tf.Tensor,
                         z_log_var: tf.Tensor) -> tf.Tensor:
  """KL(N(z_mean, exp(z_log_var)) || N(0, 1)) of each latent unit [B, D]."""
  return 0.5 * (tf.exp(z_log_var) + tf.square(z_mean) - 1.0 - z_log_var)


def free_bits_kl(kl_per_unit: tf.Tensor, free_bits: float) -> tf.Tensor:
  """The KL penalty with "free bits" (Kingma et al., 2016), per example [B].

  Each latent unit's KL, averaged over the batch, is charged at least
  `free_bits` nats: a unit below the floor gets no gradient pushing it further
  into the prior. Per example, that is the unit's KL where the batch mean is
  above the floor and the floor itself elsewhere, so that the batch mean of
  the result is sum_j max(free_bits, mean_batch KL_j).
  """
  if free_bits <= 0:
    return tf.reduce_sum(kl_per_unit, axis=1)
  above = tf.reduce_mean(kl_per_unit, axis=0, keepdims=True) > free_bits
  floor = tf.fill(tf.shape(kl_per_unit), tf.constant(free_bits, tf.float32))
  return tf.reduce_sum(tf.where(above, kl_per_unit, floor), axis=1)


_LOG_2PI = math.log(2.0 * math.pi)


def log_importance_weights(log_likelihood, targets: tf.Tensor,
                           z_mean: tf.Tensor, z_log_var: tf.Tensor,
                           epsilon: tf.Tensor, labels=None
                           ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x), for K samples.

  For a conditional model every term is conditioned on the label y as well:
  q(z | x, y), p(x | z, y), with the same prior.

  Args:
    log_likelihood: `(targets [N, ...], z [N, D]) -> log p(x | z) [N]`,
      float32; called with labels [N] as a third argument when `labels` are
      given.
    targets: float32 [B, ...], the examples x.
    z_mean, z_log_var: float32 [B, D], the encoder's Gaussian.
    epsilon: float32 [B, K, D] standard-normal noise; z_k = mean + std * eps_k.
    labels: int [B], the examples' labels (None: unconditional).

  Returns:
    float32 tensors of shape [B, K]: the log weights, the reconstruction
    NLL -log p(x | z_k), and the Monte-Carlo KL log q(z_k | x) - log p(z_k).
  """
  batch, samples = tf.shape(epsilon)[0], tf.shape(epsilon)[1]
  z = (z_mean[:, tf.newaxis] + tf.exp(0.5 * z_log_var)[:, tf.newaxis]
       * epsilon)
  # z is flattened example-major, so each example's targets repeat K times.
  condition = (() if labels is None
               else (tf.repeat(labels, samples, axis=0),))
  reconstruction = -tf.reshape(
      log_likelihood(tf.repeat(targets, samples, axis=0),
                     tf.reshape(z, [batch * samples, -1]), *condition),
      [batch, samples])
  log_prior = -0.5 * tf.reduce_sum(tf.square(z) + _LOG_2PI, axis=-1)
  log_posterior = -0.5 * tf.reduce_sum(
      tf.square(epsilon) + z_log_var[:, tf.newaxis] + _LOG_2PI, axis=-1)
  kl = log_posterior - log_prior
  return -reconstruction - kl, reconstruction, kl


def gaussian_log_density_per_unit(x, mean, log_var) -> tf.Tensor:
  """log N(x; mean, exp(log_var)) of each unit, float32, the shapes'."""
  return -0.5 * (tf.square(x - mean) * tf.exp(-log_var) + log_var + _LOG_2PI)


def sampled_terms(vae: VariationalAutoencoder, objective: "Objective",
                  inputs: tf.Tensor, targets: tf.Tensor, epsilon: tf.Tensor,
                  labels=None, training: bool = False
                  ) -> tuple[tf.Tensor, tf.Tensor]:
  """A model's terms from its sampled log-densities, for K samples each.

  What the objectives need from any model, hierarchical ones included
  (`models.hierarchy`): for z_k = encoder(x, epsilon_k), the reconstruction
  NLL -log p(x | z_k), and each unit's log q(z_k | x) - log p(z_k), whose sum
  is the Monte-Carlo KL and whose batch means are the KL per unit. The
  encoder runs once per sample, since a group's posterior may depend on
  another group's sample.

  Args:
    vae: The model.
    objective: Gives p(x | z).
    inputs, targets: [B, ...] the encoder's inputs and the examples x.
    epsilon: float32 [B, K, D] standard-normal noise.
    labels: int [B] for a conditional model, else None.
    training: Passed to the Keras models.

  Returns:
    float32 [B, K] reconstruction NLLs and [B, K, D] KL terms per unit.
  """
  batch, samples = tf.shape(epsilon)[0], tf.shape(epsilon)[1]
  rows = batch * samples
  noise = tf.reshape(tf.cast(epsilon, tf.float32), [rows, vae.latent_dim])
  condition = None if labels is None else tf.repeat(labels, samples, axis=0)
  _, z_log_var, z = vae.encode(tf.repeat(inputs, samples, axis=0), noise,
                               condition, training)
  z_log_var, z32 = tf.cast(z_log_var, tf.float32), tf.cast(z, tf.float32)
  if vae.hierarchical:
    logits, prior_mean, prior_log_var = vae.decoder_outputs(
        z, condition, training=training)
  else:
    logits = vae.decoder_logits(z, condition, training=training)
    prior_mean = prior_log_var = tf.zeros_like(z32)
  reconstruction = objective.reconstruction_nll(
      tf.repeat(targets, samples, axis=0), logits, vae.log_scale)
  # log q from the noise: z - mean = std * epsilon exactly.
  log_posterior = -0.5 * (tf.square(noise) + z_log_var + _LOG_2PI)
  kl = log_posterior - gaussian_log_density_per_unit(z32, prior_mean,
                                                     prior_log_var)
  return (tf.reshape(reconstruction, [batch, samples]),
          tf.reshape(kl, [batch, samples, vae.latent_dim]))


def iwae_bound(log_weights: tf.Tensor) -> tf.Tensor:
  """log (1/K) sum_k exp(log_weights[:, k]), per example, computed stably."""
  samples = tf.cast(tf.shape(log_weights)[1], log_weights.dtype)
  return tf.reduce_logsumexp(log_weights, axis=1) - tf.math.log(samples)


def decoder_log_likelihood(vae: VariationalAutoencoder, objective: Objective,
                           training: bool = False):
  """`(targets, z, labels=None) -> log p(targets | z (, labels))` [N] under
  the model's decoder."""
  return lambda targets, z, labels=None: -objective.reconstruction_nll(
      targets, vae.decoder_logits(z, labels, training=training),
      vae.log_scale)


def per_example_terms(vae: VariationalAutoencoder, objective: Objective,
                      batch: dict, training: bool,
                      kl_weight=None) -> dict[str, tf.Tensor]:
  """Runs the model on a batch and returns per-example loss terms.

  With epsilon of shape [B, D] this is the usual one-sample ELBO with an
  analytic KL. With epsilon [B, K, D] (`--iw_samples=K`), the `elbo`
  objective averages the reconstruction over the K samples, and the `iwae`
  objective minimizes -IWAE_K.

  Args:
    vae: The model.
    objective: The likelihood, objective, beta and free bits.
    batch: A pipeline element (inputs, targets, epsilon; and labels, which
      a conditional model needs).
    training: Passed to the Keras models.
    kl_weight: The KL's weight in the loss (default `objective.beta`; KL
      warm-up passes a growing one).

  Returns:
    float32 tensors of shape [B]: `loss` (what is minimized),
    `reconstruction`, `kl` and `elbo` (-(reconstruction + kl)).
  """
  kl_weight = objective.beta if kl_weight is None else kl_weight
  inputs, targets, epsilon = (tf.convert_to_tensor(batch[key]) for key in
                               ("inputs", "targets", "epsilon"))
  labels = batch.get("labels") if vae.conditional else None
  if vae.hierarchical:
    return _sampled_objective(vae, objective, inputs, targets, epsilon,
                              labels, training, kl_weight)
  if epsilon.shape.rank == 2 and objective.objective == "elbo":
    z_mean, z_log_var, z = vae.encode(inputs, epsilon, labels, training)
    logits = vae.decoder_logits(z, labels, training=training)
    reconstruction = objective.reconstruction_nll(targets, logits,
                                                  vae.log_scale)
    return _elbo_terms(objective, reconstruction, z_mean, z_log_var, kl_weight)
  if epsilon.shape.rank == 2:
    epsilon = epsilon[:, tf.newaxis]
  z_mean, z_log_var, _ = vae.encode(inputs, epsilon[:, 0], labels, training)
  z_mean = tf.cast(z_mean, tf.float32)
  z_log_var = tf.cast(z_log_var, tf.float32)
  log_weights, reconstruction, kl = log_importance_weights(
      decoder_log_likelihood(vae, objective, training), targets,
      z_mean, z_log_var, epsilon, labels)
  if objective.objective == "elbo":
    return _elbo_terms(objective, tf.reduce_mean(reconstruction, axis=1), z_mean,
                       z_log_var, kl_weight)
  return {
      "loss": -iwae_bound(log_weights),
      "reconstruction": tf.reduce_mean(reconstruction, axis=1),
      "kl": tf.reduce_mean(kl, axis=1),
      "elbo": tf.reduce_mean(log_weights, axis=1),
  }


def _elbo_terms(objective, reconstruction, z_mean, z_log_var, kl_weight):
  kl_per_unit = gaussian_kl_per_unit(tf.cast(z_mean, tf.float32),
                                     tf.cast(z_log_var, tf.float32))
  kl = tf.reduce_sum(kl_per_unit, axis=1)
  penalty = free_bits_kl(kl_per_unit, objective.free_bits)
  return {
      "loss": reconstruction + kl_weight * penalty,
      "reconstruction": reconstruction,
      "kl": kl,
      "elbo": -(reconstruction + kl),
  }


def _sampled_objective(vae, objective, inputs, targets, epsilon, labels,
                       training, kl_weight):
  """`per_example_terms` from the sampled log-densities (no analytic KL)."""
  if epsilon.shape.rank == 2:
    epsilon = epsilon[:, tf.newaxis]
  reconstruction, kl_per_unit = sampled_terms(
      vae, objective, inputs, targets, epsilon, labels, training)
  kl = tf.reduce_sum(kl_per_unit, axis=2)
  if objective.objective == "elbo":
    mean_reconstruction = tf.reduce_mean(reconstruction, axis=1)
    penalty = free_bits_kl(tf.reduce_mean(kl_per_unit, axis=1),
                           objective.free_bits)
    mean_kl = tf.reduce_mean(kl, axis=1)
    return {"loss": mean_reconstruction + kl_weight * penalty,
            "reconstruction": mean_reconstruction, "kl": mean_kl,
            "elbo": -(mean_reconstruction + mean_kl)}
  log_weights = -reconstruction - kl
  return {"loss": -iwae_bound(log_weights),
          "reconstruction": tf.reduce_mean(reconstruction, axis=1),
          "kl": tf.reduce_mean(kl, axis=1),
          "elbo": tf.reduce_mean(log_weights, axis=1)}
