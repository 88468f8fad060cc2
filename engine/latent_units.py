"""What each latent unit carries: its mean KL and how much its posterior mean
varies across the data (Burda et al.'s active units)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from engine import elbo
from engine.likelihood import ACTIVE_UNIT_THRESHOLD


def unit_statistics(vae, images: np.ndarray, batch_size: int = 1000,
                    posterior=None, labels: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """(mean KL per unit [D], variance of the posterior mean per unit [D]).

  Args:
    vae: The model (`models.base.VariationalAutoencoder`).
    images: float32 [N, ...] in [0, 1], as the encoder sees them.
    batch_size: Images encoded at a time.
    posterior: `vae.posterior` compiled once by a caller that evaluates
      repeatedly (default: compiled here).
    labels: The images' labels, which a conditional model's posterior
      needs (None: unconditional).
  """
  posterior = posterior or tf.function(vae.posterior, reduce_retracing=True)
  kl_sum = np.zeros(vae.latent_dim)
  means = []
  for start in range(0, len(images), batch_size):
    condition = (() if labels is None else
                 (tf.constant(labels[start:start + batch_size], tf.int32),))
    z_mean, z_log_var = posterior(
        tf.constant(images[start:start + batch_size], tf.float32), *condition)
    kl_sum += elbo.gaussian_kl_per_unit(z_mean, z_log_var).numpy().sum(0)
    means.append(z_mean.numpy().astype(np.float64))
  means = np.concatenate(means)
  return kl_sum / max(len(images), 1), means.var(axis=0)


def active_units(unit_variances: np.ndarray) -> int:
  return int(np.sum(np.asarray(unit_variances) > ACTIVE_UNIT_THRESHOLD))
