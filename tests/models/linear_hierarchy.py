"""A two-layer linear-Gaussian model built as a `HierarchicalVAE`, whose
log p(x) is known in closed form (tests of the hierarchical contract).

    z2 ~ N(0, I),  z1 | z2 ~ N(A z2 + a, s1^2 I),  x | z1 ~ N(B z1 + b, s^2 I)

so z1 ~ N(a, A A^T + s1^2 I) and x ~ N(B a + b, B (A A^T + s1^2 I) B^T +
s^2 I). The inference network is bottom-up, q(z1 | x) q(z2 | z1): p(z2 | z1)
exactly (x depends on z2 only through z1), and p(z1 | x) with its variance
made diagonal and inflated, so the importance weights vary.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from models import base
from models import hierarchy

DATA, Z1, Z2 = 6, 3, 2


def _gaussian_conditional(mean_map, offset, cov_prior_mean, cov_prior,
                          noise_cov):
  """The posterior of u ~ N(cov_prior_mean, cov_prior) given
  y = M u + offset + N(0, noise_cov): (gain G, constant g, covariance) with
  E[u | y] = G y + g."""
  gain = cov_prior @ mean_map.T @ np.linalg.inv(
      mean_map @ cov_prior @ mean_map.T + noise_cov)
  constant = cov_prior_mean - gain @ (mean_map @ cov_prior_mean + offset)
  return gain, constant, cov_prior - gain @ mean_map @ cov_prior


class LinearHierarchy:
  """The model's parameters, its exact marginal and its `HierarchicalVAE`."""

  def __init__(self, seed=0, noise=0.5, z1_noise=0.7):
    rng = np.random.default_rng(seed)
    self.a_map, self.a = rng.normal(size=(Z1, Z2)), rng.normal(size=Z1)
    self.b_map, self.b = rng.normal(size=(DATA, Z1)), rng.normal(size=DATA)
    self.noise, self.z1_noise = noise, z1_noise
    self.z1_cov = self.a_map @ self.a_map.T + z1_noise ** 2 * np.eye(Z1)
    self.x_mean = self.b_map @ self.a + self.b
    self.x_cov = (self.b_map @ self.z1_cov @ self.b_map.T
                  + noise ** 2 * np.eye(DATA))
    # q(z1 | x): p(z1 | x), diagonal and inflated; q(z2 | z1) = p(z2 | z1).
    self.q1_gain, self.q1_bias, cov1 = _gaussian_conditional(
        self.b_map, self.b, self.a, self.z1_cov, noise ** 2 * np.eye(DATA))
    self.q1_log_var = np.log(np.diag(cov1) * 1.5)
    self.q2_gain, self.q2_bias, cov2 = _gaussian_conditional(
        self.a_map, self.a, np.zeros(Z2), np.eye(Z2),
        z1_noise ** 2 * np.eye(Z1))
    self.q2_log_var = np.log(np.diag(cov2))

  def sample(self, n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(self.x_mean, self.x_cov, size=n)

  def log_marginal(self, x):
    diff = x - self.x_mean
    _, logdet = np.linalg.slogdet(self.x_cov)
    quad = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(self.x_cov), diff)
    return -0.5 * (quad + logdet + DATA * math.log(2 * math.pi))

  def vae(self) -> hierarchy.HierarchicalVAE:
    """The model as the engine takes it: `logits` are the mean of x."""
    images, epsilon = base.encoder_inputs((DATA,), Z1 + Z2)
    noise1, noise2 = hierarchy.noise_slices(epsilon, (Z1, Z2))
    dense = {}

    def layer(name, units, kernel, bias):
      dense[name] = (keras.layers.Dense(units, name=name),
                     [np.asarray(kernel, np.float32),
                      np.asarray(bias, np.float32)])
      return dense[name][0]

    z1_mean = layer("q1_mean", Z1, self.q1_gain.T, self.q1_bias)(images)
    z1_log_var = layer("q1_log_var", Z1, np.zeros((DATA, Z1)),
                       self.q1_log_var)(images)
    z1 = base.Reparameterize()([z1_mean, z1_log_var, noise1])
    z2_mean = layer("q2_mean", Z2, self.q2_gain.T, self.q2_bias)(z1)
    z2_log_var = layer("q2_log_var", Z2, np.zeros((Z1, Z2)),
                       self.q2_log_var)(z1)
    z2 = base.Reparameterize()([z2_mean, z2_log_var, noise2])
    encoder = keras.Model([images, epsilon], [
        hierarchy.concatenate([z1_mean, z2_mean], "z_mean"),
        hierarchy.concatenate([z1_log_var, z2_log_var], "z_log_var"),
        hierarchy.concatenate([z1, z2], "z")])

    z = keras.Input(shape=(Z1 + Z2,), name="z")
    z1_part = hierarchy.NoiseSlice(0, Z1)(z)
    z2_part = hierarchy.NoiseSlice(Z1, Z2)(z)
    prior1_mean = layer("p1_mean", Z1, self.a_map.T, self.a)(z2_part)
    prior1_log_var = layer("p1_log_var", Z1, np.zeros((Z2, Z1)), np.full(
        Z1, 2 * math.log(self.z1_noise)))(z2_part)
    prior2_mean, prior2_log_var = hierarchy.StandardPrior(Z2)(z2_part)
    logits = layer("x_mean", DATA, self.b_map.T, self.b)(z1_part)
    decoder = keras.Model(z, [
        logits, hierarchy.concatenate([prior1_mean, prior2_mean], "pm"),
        hierarchy.concatenate([prior1_log_var, prior2_log_var], "plv")])
    for built, weights in dense.values():
      built.set_weights(weights)
    return hierarchy.HierarchicalVAE("linear_hierarchy", encoder, decoder,
                                     group_sizes=(Z1, Z2))

  def log_weights(self, x, epsilon):
    """log p(x, z) - log q(z | x) in numpy, float64, for noise [N, K, 5]."""
    def log_normal(value, mean, var):
      return -0.5 * np.sum((value - mean) ** 2 / var + np.log(
          2 * math.pi * var), axis=-1)

    x = x[:, np.newaxis]
    eps1, eps2 = epsilon[..., :Z1], epsilon[..., Z1:]
    q1_mean = x @ self.q1_gain.T + self.q1_bias
    z1 = q1_mean + np.exp(0.5 * self.q1_log_var) * eps1
    q2_mean = z1 @ self.q2_gain.T + self.q2_bias
    z2 = q2_mean + np.exp(0.5 * self.q2_log_var) * eps2
    return (log_normal(x, z1 @ self.b_map.T + self.b, self.noise ** 2)
            + log_normal(z1, z2 @ self.a_map.T + self.a, self.z1_noise ** 2)
            + log_normal(z2, 0.0, 1.0)
            - log_normal(z1, q1_mean, np.exp(self.q1_log_var))
            - log_normal(z2, q2_mean, np.exp(self.q2_log_var)))


class LinearLikelihood:
  """p(x | z) = N(x; logits, s^2 I): what `elbo.sampled_terms` asks of an
  objective (`reconstruction_nll`), without the engine's sigmoid mean."""

  def __init__(self, noise):
    self.noise = noise

  def reconstruction_nll(self, targets, logits, log_scale=None):
    del log_scale
    per_dim = 0.5 * (tf.square((tf.cast(targets, tf.float32) - logits)
                               / self.noise)
                     + math.log(2 * math.pi * self.noise ** 2))
    return tf.reduce_sum(per_dim, axis=1)
