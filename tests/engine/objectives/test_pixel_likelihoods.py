"""Likelihoods with a learned scale, against numpy references."""

import math

import numpy as np
import pytest
import tensorflow as tf

from engine.objectives import elbo
from engine.objectives import pixel_likelihoods
from engine.config import ModelConfig


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_discretized_logistic(levels, mean, log_scale):
  """log P(level) in float64: the logistic's mass on the level's bin of
  [-1, 1], the end bins taking the tails."""
  x = 2.0 * levels / 255.0 - 1.0
  mu, s = 2.0 * mean - 1.0, np.exp(np.maximum(log_scale, -7.0))
  upper = np.where(levels == 255, 1.0, _sigmoid((x + 1 / 255 - mu) / s))
  lower = np.where(levels == 0, 0.0, _sigmoid((x - 1 / 255 - mu) / s))
  return np.log(upper - lower)


def test_discretized_logistic_matches_numpy_and_sums_to_one():
  rng = np.random.default_rng(0)
  levels = rng.integers(0, 256, size=500).astype(np.float64)
  levels[:3] = [0, 255, 128]
  mean = rng.uniform(0.05, 0.95, size=500)
  log_scale = rng.uniform(-3.5, 0.5, size=500)
  ours = pixel_likelihoods.discretized_logistic_log_prob(
      tf.constant(levels / 255.0, tf.float32), tf.constant(mean, tf.float32),
      tf.constant(log_scale, tf.float32)).numpy()
  with np.errstate(divide="ignore"):
    reference = _reference_discretized_logistic(levels, mean, log_scale)
  assert np.isfinite(ours).all()
  # Bins with float32-resolvable mass: the exact difference of CDFs.
  exact = reference > math.log(1e-5)
  assert exact.sum() > 300
  np.testing.assert_allclose(ours[exact], reference[exact], rtol=1e-3,
                             atol=1e-4)
  # Far in a tail: the density at the bin's centre times its width.
  tail = ~exact & np.isfinite(reference)
  np.testing.assert_allclose(ours[tail], reference[tail], atol=0.1)
  assert (ours[~np.isfinite(reference)] < -20).all()
  # A distribution over the 256 levels, whatever the mean and scale.
  all_levels = np.arange(256, dtype=np.float64)
  for m, ls in ((0.5, -2.0), (0.02, -4.0), (0.97, 0.3)):
    mass = np.exp(pixel_likelihoods.discretized_logistic_log_prob(
        tf.constant(all_levels / 255.0, tf.float32),
        tf.fill([256], float(m)), tf.fill([256], float(ls))).numpy())
    assert abs(mass.sum() - 1.0) < 2e-3, (m, ls, mass.sum())


def test_gaussian_with_learned_variance_matches_numpy():
  rng = np.random.default_rng(1)
  targets = rng.uniform(size=(3, 4, 4, 3))
  logits = rng.normal(size=(3, 4, 4, 3))
  log_scale = rng.uniform(-3, 0, size=(4, 4, 3))
  ours = pixel_likelihoods.gaussian_learned_nll(
      tf.constant(targets, tf.float32), tf.constant(logits, tf.float32),
      tf.constant(log_scale, tf.float32)).numpy()
  sigma = np.exp(log_scale)
  reference = -np.sum(
      -0.5 * ((targets - _sigmoid(logits)) / sigma) ** 2 - np.log(sigma)
      - 0.5 * math.log(2 * math.pi), axis=(1, 2, 3))
  np.testing.assert_allclose(ours, reference, rtol=1e-5)


def test_the_scale_is_learned_and_required():
  config = elbo.Objective(likelihood="discretized_logistic")
  targets = tf.fill([2, 4, 4, 1], 100.0 / 255.0)
  logits = tf.zeros([2, 4, 4, 1])
  log_scale = tf.Variable(tf.zeros([4, 4, 1]))
  with tf.GradientTape() as tape:
    nll = tf.reduce_sum(config.reconstruction_nll(targets, logits,
                                                   log_scale))
  assert tape.gradient(nll, log_scale) is not None
  with pytest.raises(ValueError, match="learned log-scale"):
    config.reconstruction_nll(targets, logits)


@pytest.mark.e2e
def test_gaussian_learned_trains_resumes_and_learns_its_scale(
    small_mnist_dir, tmp_path):
  import io

  from engine.run import build
  from engine.run import runner
  from engine.io import summaries
  from engine.config import DataConfig, RunConfig, TrainConfig

  def config(steps):
    return RunConfig(
        data=DataConfig(data_dir=small_mnist_dir),
        model=ModelConfig(name="dense", latent_dim=2,
                          reconstruction_loss="gaussian_learned"),
        train=TrainConfig(model_dir=str(tmp_path), batch_size=64,
                          train_steps=steps, steps_per_loop=10, log_every=10,
                          checkpoint_every=20, figures=False))

  runner.run(config(20), io.StringIO())
  parts = build.build(config(40))
  assert parts.resumed_from.endswith("ckpt-20")
  # The scale is a weight of the model: restored, and moved by training.
  restored = parts.vae.log_scale.numpy()
  assert restored.shape == (28, 28, 1)
  assert not np.allclose(restored, -2.0)
  runner.train_evaluate_export(parts, io.StringIO())
  train = summaries.read_metrics(str(tmp_path))["train"]
  assert train[40]["loss"] < train[10]["loss"]
