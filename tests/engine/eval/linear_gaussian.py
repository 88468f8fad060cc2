"""A linear Gaussian model whose marginal likelihood is known in closed
form, and hand-made evaluation batches: the reference of the likelihood
estimator's tests."""

import math

import numpy as np
import tensorflow as tf


def batch(targets, latent_dim, seed=0, inputs=None):
  """A hand-made evaluation element: one global batch, offset 0."""
  targets = tf.constant(targets, tf.float32)
  return {"inputs": targets if inputs is None else inputs,
          "targets": targets,
          "epsilon": tf.random.stateless_normal(
              [targets.shape[0], latent_dim], [seed, 1]),
          "weights": tf.ones([targets.shape[0]]),
          "batch_index": tf.constant(0, tf.int64),
          "offset": tf.constant(0, tf.int64)}


class LinearGaussian:
  """p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I): p(x) = N(b, W W^T + s^2 I).

  The "encoder" is the exact posterior, deliberately perturbed (shifted mean,
  inflated variance) so that the importance weights vary and the estimator
  has something to do.
  """

  def __init__(self, data_dim=6, latent_dim=3, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    self.w = rng.normal(size=(data_dim, latent_dim))
    self.b = rng.normal(size=data_dim)
    self.noise = noise
    self.latent_dim = latent_dim
    precision = np.eye(latent_dim) + self.w.T @ self.w / noise ** 2
    self.post_cov = np.linalg.inv(precision)

  def sample(self, n, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, self.latent_dim))
    return z @ self.w.T + self.b + self.noise * rng.normal(
        size=(n, len(self.b)))

  def log_marginal(self, x):
    cov = self.w @ self.w.T + self.noise ** 2 * np.eye(len(self.b))
    diff = x - self.b
    _, logdet = np.linalg.slogdet(cov)
    quad = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    return -0.5 * (quad + logdet + len(self.b) * math.log(2 * math.pi))

  def encode(self, x):
    x = tf.cast(x, tf.float64)
    mean = tf.matmul(x - self.b, self.w / self.noise ** 2) @ self.post_cov
    log_var = np.log(np.diag(self.post_cov) * 1.5)  # Inflated, diagonal.
    z_mean = tf.cast(mean + 0.2, tf.float32)          # Shifted.
    z_log_var = tf.cast(tf.broadcast_to(log_var, tf.shape(mean)), tf.float32)
    return z_mean, z_log_var

  def log_likelihood(self, x, z):
    mean = tf.matmul(tf.cast(z, tf.float64), self.w.T) + self.b
    per_dim = -0.5 * (tf.square((tf.cast(x, tf.float64) - mean) / self.noise)
                      + math.log(2 * math.pi * self.noise ** 2))
    return tf.cast(tf.reduce_sum(per_dim, axis=1), tf.float32)
