"""Training objectives beyond the plain ELBO: IWAE, K-sample ELBO, KL warm-up,
free bits, and the IWAE paper's learning-rate schedule."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import models
from tests.engine.train.trainers import make_trainer
from engine.objectives import elbo
from engine.run import parts
from engine.train import optimization
from engine.config import ModelConfig


@pytest.fixture(scope="module")
def dense_vae():
  tf.keras.utils.set_random_seed(0)
  return models.get("dense").build((28, 28, 1), 2)


def _batch(samples=None, size=6, seed=0):
  rng = np.random.default_rng(seed)
  images = (rng.uniform(size=(size, 28, 28, 1)) > 0.6).astype(np.float32)
  shape = (size, 2) if samples is None else (size, samples, 2)
  return {"inputs": images, "targets": images,
          "epsilon": rng.normal(size=shape).astype(np.float32)}


def test_iwae_bound_is_above_the_mean_log_weight_and_k1_is_the_mc_elbo(
    dense_vae):
  config = ModelConfig(name="dense", objective="iwae")
  terms = elbo.per_example_terms(dense_vae, parts.objective(config), _batch(samples=20),
                                 training=False)
  # log mean exp >= mean log, per example (Jensen).
  assert np.all(-terms["loss"].numpy() >= terms["elbo"].numpy() - 1e-4)
  assert np.all(-terms["loss"].numpy() > terms["elbo"].numpy() + 1e-3)
  one = _batch(samples=1)
  single = elbo.per_example_terms(dense_vae, parts.objective(config), one, training=False)
  np.testing.assert_allclose(-single["loss"], single["elbo"], rtol=1e-6)
  # ... which is the analytic-KL ELBO's reconstruction with a sampled KL.
  flat = dict(one, epsilon=one["epsilon"][:, 0])
  analytic = elbo.per_example_terms(dense_vae, parts.objective(ModelConfig(name="dense")),
                                    flat, training=False)
  np.testing.assert_allclose(single["reconstruction"],
                             analytic["reconstruction"], rtol=1e-5)


def test_k_sample_elbo_averages_the_reconstruction(dense_vae):
  config = ModelConfig(name="dense")
  batch = _batch(samples=3)
  terms = elbo.per_example_terms(dense_vae, parts.objective(config), batch, training=False)
  per_sample = [elbo.per_example_terms(
      dense_vae, parts.objective(config), dict(batch, epsilon=batch["epsilon"][:, k]),
      training=False)["reconstruction"].numpy() for k in range(3)]
  np.testing.assert_allclose(terms["reconstruction"],
                             np.mean(per_sample, axis=0), rtol=1e-5)


def test_free_bits_floor_each_units_batch_mean_and_stop_its_gradient():
  kl_units = tf.constant([[0.1, 2.0, 0.5], [0.3, 4.0, 0.1]])
  penalty = elbo.free_bits_kl(kl_units, 1.0)
  # Batch means per unit: 0.2, 3.0, 0.3 -> max with 1: 1, 3, 1.
  assert float(tf.reduce_mean(penalty)) == pytest.approx(5.0)
  with tf.GradientTape() as tape:
    tape.watch(kl_units)
    total = tf.reduce_sum(elbo.free_bits_kl(kl_units, 1.0))
  np.testing.assert_array_equal(tape.gradient(total, kl_units),
                                [[0, 1, 0], [0, 1, 0]])
  np.testing.assert_allclose(elbo.free_bits_kl(kl_units, 0.0),
                             tf.reduce_sum(kl_units, axis=1))


def test_free_bits_change_the_loss_not_the_reported_elbo(dense_vae):
  batch = _batch()
  plain = elbo.per_example_terms(dense_vae, parts.objective(ModelConfig(name="dense")), batch,
                                 training=False)
  floored = elbo.per_example_terms(
      dense_vae, parts.objective(ModelConfig(name="dense", free_bits=50.0)),
      batch,
      training=False)
  np.testing.assert_allclose(plain["elbo"], floored["elbo"])
  # Two units, each charged at least 50 nats.
  np.testing.assert_allclose(floored["loss"],
                             floored["reconstruction"] + 100.0, rtol=1e-5)


def test_kl_warmup_ramps_the_weight_to_beta(dense_vae):
  config = ModelConfig(name="dense", beta=0.5, kl_warmup_steps=4)
  trainer = make_trainer(dense_vae, config, tf.distribute.get_strategy(),
                          6, 1e-3)
  weights = []
  for step in range(6):
    trainer.global_step.assign(step)
    weights.append(float(trainer.kl_weight()))
  np.testing.assert_allclose(weights, [0.125, 0.25, 0.375, 0.5, 0.5, 0.5])
  trainer.global_step.assign(0)
  terms = elbo.per_example_terms(dense_vae, parts.objective(config), _batch(), training=False,
                                 kl_weight=trainer.kl_weight())
  np.testing.assert_allclose(terms["loss"], terms["reconstruction"]
                             + 0.125 * terms["kl"], rtol=1e-5)
  no_warmup = make_trainer(dense_vae, dataclasses.replace(
      config, kl_warmup_steps=0), tf.distribute.get_strategy(), 6, 1e-3)
  assert no_warmup.kl_weight() == 0.5


def test_iwae_schedule_has_the_papers_stages():
  assert optimization.iwae_boundaries(10) == [10, 40, 130, 400, 1210, 3640,
                                           10930]
  rate = optimization.learning_rate("iwae", 1e-3, 10)
  for step, stage in ((0, 0), (9, 0), (10, 1), (39, 1), (40, 2), (10929, 6),
                      (10930, 7), (10 ** 6, 7)):
    assert float(rate(step)) == pytest.approx(1e-3 * 10 ** (-stage / 7))
  assert optimization.learning_rate("constant", 3e-4, 10) == 3e-4
  with pytest.raises(ValueError, match="schedule"):
    optimization.learning_rate("bogus", 1e-3, 10)


def test_trainer_follows_the_schedule_through_its_steps(dense_vae):
  trainer = make_trainer(
      dense_vae, ModelConfig(name="dense"), tf.distribute.get_strategy(), 6,
      optimization.learning_rate("iwae", 1e-3, 2), adam_epsilon=1e-4)
  optimizer = trainer.checkpoint_items()["optimizer"]
  assert optimizer.epsilon == 1e-4
  optimizer.iterations.assign(2)
  assert trainer.learning_rate_now() == pytest.approx(
      1e-3 * 10 ** (-1 / 7))
