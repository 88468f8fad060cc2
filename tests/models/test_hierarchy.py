"""Hierarchical latents (models.hierarchy): the sampled log-densities against
a closed-form model, ancestral sampling, and the contract checker's refusals."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from engine.eval import evaluator as evaluator_lib
from engine.eval import likelihood
from engine.objectives import elbo
from models import contract
from models import hierarchy
from tests.models.linear_hierarchy import LinearHierarchy, LinearLikelihood

_STRATEGY = tf.distribute.get_strategy()


def _batch(x, latent_dim, seed=0):
  x = tf.constant(x, tf.float32)
  return {"inputs": x, "targets": x,
          "epsilon": tf.random.stateless_normal([x.shape[0], latent_dim],
                                                [seed, 1]),
          "weights": tf.ones([x.shape[0]]),
          "batch_index": tf.constant(0, tf.int64),
          "offset": tf.constant(0, tf.int64)}


def test_sampled_log_densities_are_the_closed_form_models():
  model = LinearHierarchy()
  vae = model.vae()
  contract.check_behaviour(vae)  # It keeps the contract it tests.
  x = model.sample(16)
  epsilon = np.random.default_rng(5).standard_normal((16, 7, 5))
  reconstruction, kl_per_unit = elbo.sampled_terms(
      vae, LinearLikelihood(model.noise), tf.constant(x, tf.float32),
      tf.constant(x, tf.float32), tf.constant(epsilon, tf.float32))
  assert reconstruction.shape == (16, 7) and kl_per_unit.shape == (16, 7, 5)
  ours = -reconstruction.numpy() - kl_per_unit.numpy().sum(axis=2)
  np.testing.assert_allclose(ours, model.log_weights(x, epsilon), rtol=1e-4,
                             atol=1e-3)


def test_the_iwae_bound_climbs_from_the_elbo_to_the_exact_marginal():
  """ELBO < IWAE_50 < log p(x), and the K=5000 estimate lands on log p(x),
  through the engine's evaluators."""
  model = LinearHierarchy()
  vae = model.vae()
  x = model.sample(40)
  exact = model.log_marginal(x).mean()
  sampled = evaluator_lib.model_sampled_terms(vae, LinearLikelihood(
      model.noise))
  dataset = tf.data.Dataset.from_tensors(_batch(x, 5))

  def nll(samples):
    return likelihood.ImportanceSampledEvaluator(
        vae.posterior, None, _STRATEGY, (6,), 5, num_samples=samples,
        global_batch_size=40, seed=0, sampled=sampled).evaluate(dataset)

  evaluation = evaluator_lib.Evaluator(
      vae.posterior, None, _STRATEGY, 5, sampled=sampled,
      latent_groups=(3, 2)).evaluate(dataset)
  iwae50, best = nll(50), nll(5000)
  assert evaluation["elbo"] < -iwae50.nll - 0.05
  assert -iwae50.nll < exact + 0.02
  assert abs(-best.nll - exact) < max(best.nll_stderr, 0.02)
  assert evaluation["kl_per_unit"].shape == (5,)
  assert evaluation["active_units"] == (evaluation["active_units_z1"]
                                        + evaluation["active_units_z2"])
  assert evaluation["kl"] == pytest.approx(evaluation["kl_z1"]
                                           + evaluation["kl_z2"])
  assert evaluation["kl_z2"] == pytest.approx(
      evaluation["kl_per_unit"][3:].sum())


def test_iwae_mlp2_samples_top_down_and_completes_a_top_code():
  keras.utils.set_random_seed(0)
  vae = models.get("iwae_mlp2").create((28, 28, 1), 150)
  assert vae.latent_groups == (100, 50) and vae.top_dim == 50
  epsilon = np.random.default_rng(0).standard_normal((4, 150)).astype(
      np.float32)
  z = vae.prior_sample(epsilon).numpy()
  np.testing.assert_array_equal(z[:, 100:], epsilon[:, 100:])  # N(0, I).
  mean, log_var = (t.numpy() for t in vae.prior_moments(z))
  np.testing.assert_allclose(
      z[:, :100], mean[:, :100] + np.exp(0.5 * log_var[:, :100])
      * epsilon[:, :100], rtol=1e-5, atol=1e-5)
  completed = vae.complete_from_top(epsilon[:, 100:]).numpy()
  np.testing.assert_allclose(
      completed[:, :100], vae.prior_moments(completed)[0].numpy()[:, :100],
      rtol=1e-5, atol=1e-6)
  assert vae.decode_top(epsilon[:, 100:]).shape == (4, 28, 28, 1)


def _bad_hierarchy(prior_sees_own_group=False, group_sizes=(2, 1)):
  images, epsilon = models.base.encoder_inputs((4,), 3)
  h = keras.layers.Dense(3)(images)
  z_log_var = keras.layers.Dense(3)(images)
  z = models.base.Reparameterize()([h, z_log_var, epsilon])
  encoder = keras.Model([images, epsilon], [h, z_log_var, z])
  code = keras.Input(shape=(3,))
  source = code if prior_sees_own_group else hierarchy.NoiseSlice(2, 1)(code)
  top_mean, top_log_var = hierarchy.StandardPrior(1)(code)
  decoder = keras.Model(code, [
      keras.layers.Dense(4)(code),
      hierarchy.concatenate([keras.layers.Dense(2)(source), top_mean], "pm"),
      hierarchy.concatenate([keras.layers.Dense(2)(source), top_log_var],
                            "plv")])
  return hierarchy.HierarchicalVAE("bad", encoder, decoder,
                                   group_sizes=group_sizes)


def test_the_checker_refuses_a_prior_that_sees_its_own_group():
  contract.check_behaviour(_bad_hierarchy())  # The same, well ordered.
  with pytest.raises(contract.ContractError, match=(
      r"^--model=bad: the prior of its latent columns 0:2 changes with those "
      r"columns or the ones before them; make p\(z_g \| z_>g\)")):
    contract.check_behaviour(_bad_hierarchy(prior_sees_own_group=True))


@pytest.mark.parametrize("sizes", [(3,), (2, 2), (2.0, 1), (3, 0)])
def test_the_checker_refuses_group_sizes_that_do_not_split_the_latent(sizes):
  with pytest.raises(contract.ContractError, match=(
      r"^--model=bad: its group_sizes .* are not two or more positive ints "
      r"adding up to the latent size 3; see models/hierarchy.py")):
    contract.check_structure(_bad_hierarchy(group_sizes=sizes), "bad", (4,),
                             3)


def test_the_checker_refuses_a_hierarchical_decoder_without_prior_moments():
  vae = _bad_hierarchy()
  code = keras.Input(shape=(3,))
  single = keras.Model(code, keras.layers.Dense(4)(code))
  with pytest.raises(contract.ContractError, match=(
      r"^--model=bad: its decoder returns shapes \[\(None, 4\)\], not "
      r"\[logits \(None, 4\), prior_mean \(None, 3\), prior_log_var")):
    contract.check_structure(
        hierarchy.HierarchicalVAE("bad", vae.encoder, single,
                                  group_sizes=(2, 1)), "bad", (4,), 3)


def test_learned_scale_keeps_the_prior_moments():
  vae = models.get("iwae_mlp2").create((28, 28, 1), 150, learned_scale=True)
  assert vae.log_scale is not None and vae.hierarchical
  contract.check_behaviour(vae)
  assert math.prod(vae.log_scale.shape) == 784
