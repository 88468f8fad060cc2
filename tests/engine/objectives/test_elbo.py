"""Loss terms against a numpy reference."""

import numpy as np
import pytest

from engine.objectives import elbo
from engine.objectives import pixel_likelihoods
import models


def _np_bernoulli_nll(targets, logits):
  p = 1.0 / (1.0 + np.exp(-logits))
  per_pixel = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
  return per_pixel.reshape(len(targets), -1).sum(axis=1)


def _np_gaussian_nll(targets, logits, stddev):
  mean = 1.0 / (1.0 + np.exp(-logits))
  per_pixel = (0.5 * ((targets - mean) / stddev) ** 2 + np.log(stddev)
               + 0.5 * np.log(2 * np.pi))
  return per_pixel.reshape(len(targets), -1).sum(axis=1)


def _np_kl(mean, log_var):
  # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2, per dimension.
  s2 = np.exp(log_var)
  return (-0.5 * log_var + 0.5 * (s2 + mean ** 2) - 0.5).sum(axis=1)


def _kl(mean, log_var):
  # The KL the ELBO charges: its per-unit terms summed over latents.
  per_unit = elbo.gaussian_kl_per_unit(mean, log_var)
  assert per_unit.shape == mean.shape
  return np.sum(per_unit, axis=1)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


def test_bernoulli_matches_numpy(rng):
  targets = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
  logits = rng.normal(scale=3, size=(5, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(pixel_likelihoods.bernoulli_nll(targets, logits),
                             _np_bernoulli_nll(targets.astype(np.float64),
                                               logits.astype(np.float64)),
                             rtol=1e-5)


def test_gaussian_matches_numpy(rng):
  targets = rng.uniform(size=(4, 28, 28, 1)).astype(np.float32)
  logits = rng.normal(size=(4, 28, 28, 1)).astype(np.float32)
  np.testing.assert_allclose(pixel_likelihoods.gaussian_nll(targets, logits, 0.1),
                             _np_gaussian_nll(targets, logits, 0.1), rtol=1e-5)


def test_kl_matches_numpy_and_is_zero_at_prior(rng):
  mean = rng.normal(size=(6, 3)).astype(np.float32)
  log_var = rng.normal(size=(6, 3)).astype(np.float32)
  np.testing.assert_allclose(_kl(mean, log_var), _np_kl(mean, log_var),
                             rtol=1e-5)
  np.testing.assert_allclose(_kl(np.zeros((2, 3), np.float32),
                                 np.zeros((2, 3), np.float32)),
                             [0.0, 0.0], atol=1e-7)


def test_kl_matches_monte_carlo(rng):
  mean, log_var = np.array([[0.7, -1.2]]), np.array([[-0.5, 0.8]])
  std = np.exp(0.5 * log_var)
  z = mean + std * rng.normal(size=(400_000, 2))
  log_q = (-0.5 * ((z - mean) / std) ** 2 - np.log(std)
           - 0.5 * np.log(2 * np.pi)).sum(1)
  log_p = (-0.5 * z ** 2 - 0.5 * np.log(2 * np.pi)).sum(1)
  assert abs(np.mean(log_q - log_p) - _np_kl(mean, log_var)[0]) < 0.01
  np.testing.assert_allclose(_kl(mean.astype(np.float32),
                                 log_var.astype(np.float32)),
                             _np_kl(mean, log_var), rtol=1e-5)


@pytest.mark.parametrize("beta", [1.0, 0.25])
def test_per_example_terms_of_a_real_model(rng, beta):
  spec = models.get("dense")
  vae = spec.build((28, 28, 1), 2)
  batch = {
      "inputs": rng.uniform(size=(3, 28, 28, 1)).astype(np.float32),
      "epsilon": rng.normal(size=(3, 2)).astype(np.float32),
  }
  batch["targets"] = (batch["inputs"] > 0.5).astype(np.float32)
  config = elbo.Objective(beta=beta)
  terms = elbo.per_example_terms(vae, config, batch, training=False)
  z_mean, z_log_var, z = [t.numpy() for t in vae.encoder(
      [batch["inputs"], batch["epsilon"]])]
  np.testing.assert_allclose(
      z, z_mean + np.exp(0.5 * z_log_var) * batch["epsilon"], rtol=1e-5)
  logits = vae.decoder(z).numpy()
  reconstruction = _np_bernoulli_nll(batch["targets"], logits)
  kl = _np_kl(z_mean, z_log_var)
  np.testing.assert_allclose(terms["reconstruction"], reconstruction,
                             rtol=1e-4)
  np.testing.assert_allclose(terms["kl"], kl, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(terms["loss"], reconstruction + beta * kl,
                             rtol=1e-4)
  np.testing.assert_allclose(terms["elbo"], -(reconstruction + kl), rtol=1e-4)
  # Nats per example: 784 pixels of cross-entropy, not a per-pixel mean.
  assert terms["reconstruction"].numpy().min() > 100
