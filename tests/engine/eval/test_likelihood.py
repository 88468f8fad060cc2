"""The importance-weighted log-likelihood estimator (engine.eval.likelihood)."""

import math
import re

import numpy as np
import pytest
import tensorflow as tf

import models
from models import base
from tests.engine.train.trainers import make_trainer
from engine.eval import evaluator as evaluator_lib
from engine.eval import likelihood
from engine.config import ModelConfig
from engine.data import pipeline
from engine.run import parts
from tests.engine.eval.linear_gaussian import LinearGaussian, batch

_STRATEGY = tf.distribute.get_strategy()


def test_linear_gaussian_estimate_matches_the_closed_form_marginal():
  model = LinearGaussian()
  x = model.sample(40)
  evaluator = likelihood.ImportanceSampledEvaluator(
      model.encode, model.log_likelihood, _STRATEGY, (6,), 3,
      num_samples=5000, global_batch_size=40, seed=0, rows_per_chunk=20_000)
  assert evaluator.chunk == 500  # K is taken in 10 chunks.
  dataset = tf.data.Dataset.from_tensors(batch(x, 3))
  result = evaluator.evaluate(dataset)
  exact_nll = -model.log_marginal(x)
  assert abs(result.nll - exact_nll.mean()) < result.nll_stderr
  # Per example: the errors are small and centred on zero (their mean within
  # 3 standard errors, plus the estimator's O(1/K) downward bias) ...
  log_px = evaluator.log_likelihood(batch(x, 3))
  errors = log_px.numpy() + exact_nll
  assert np.abs(errors).max() < 0.25
  assert abs(errors.mean()) < 3 * errors.std(ddof=1) / math.sqrt(40) + 0.01
  # ... where one sample (the ELBO) is far off, and below the truth.
  elbo = evaluator_lib.Evaluator(model.encode, model.log_likelihood,
                                 _STRATEGY, 3).evaluate(dataset)
  assert elbo["elbo"] < -exact_nll.mean() - 0.1
  assert result.examples == 40 and result.num_samples == 5000
  assert result.bits_per_dim == pytest.approx(result.nll / (6 * math.log(2)))


def test_padding_rows_count_for_nothing_even_when_not_finite():
  """Rows of weight 0 (the padding of a last global batch) change no sum:
  neither the estimate, the ELBO, the active units nor the count, even
  when their values overflow."""
  model = LinearGaussian()
  x = model.sample(40)
  padded_x = np.concatenate([x, np.full((8, 6), 1e30)])

  def evaluate(batch, size):
    evaluator = likelihood.ImportanceSampledEvaluator(
        model.encode, model.log_likelihood, _STRATEGY, (6,), 3,
        num_samples=50, global_batch_size=size, seed=0)
    elbo = evaluator_lib.Evaluator(model.encode, model.log_likelihood,
                                   _STRATEGY, 3)
    dataset = tf.data.Dataset.from_tensors(batch)
    return evaluator.evaluate(dataset), elbo.evaluate(dataset)

  plain, plain_elbo = evaluate(batch(x, 3), 40)
  padded_batch = batch(padded_x, 3)
  padded_batch["weights"] = tf.constant([1.0] * 40 + [0.0] * 8)
  padded, padded_elbo = evaluate(padded_batch, 48)
  assert padded.examples == 40 and padded_elbo["examples"] == 40
  assert np.isfinite(padded.nll) and np.isfinite(padded_elbo["elbo"])
  # The noise of the first 40 rows is the same slice of each global draw
  # only when the global batch is; here it is not, so compare the ELBO-free
  # quantities the noise does not enter, and the estimate to its error.
  np.testing.assert_allclose(padded_elbo["unit_variances"],
                             plain_elbo["unit_variances"], rtol=1e-6)
  assert abs(padded.nll - plain.nll) < 3 * plain.nll_stderr


@pytest.fixture(scope="module")
def tiny_vae(mnist):
  """A dense VAE (latent 2) trained for 150 steps, and 256 binarized test
  digits (trained, so that q(z|x) is narrower than the prior and the bound's
  gap is worth closing)."""
  tf.keras.utils.set_random_seed(3)
  vae = models.get("dense").build((28, 28, 1), 2)
  config = ModelConfig(name="dense", latent_dim=2)
  options = pipeline.PipelineOptions(global_batch_size=64, seed=0,
                                     binarize="static", noise_factor=0.0,
                                     latent_dim=2)
  trainer = make_trainer(vae, config, _STRATEGY, 64, 3e-3)
  trainer.train_loop(iter(pipeline.train_dataset(
      tf.constant(mnist.train_images[:4096]), options, 0, 150)),
      tf.constant(150))
  images = (mnist.test_images[:256] >= 128).astype(np.float32)
  return vae, config, images


def _functions(vae, config):
  return evaluator_lib.model_functions(vae, parts.objective(config))


def _evaluator(tiny_vae, num_samples, seed=0):
  vae, config, images = tiny_vae
  return likelihood.ImportanceSampledEvaluator(
      *_functions(vae, config), _STRATEGY, (28, 28, 1), 2, num_samples,
      global_batch_size=len(images), seed=seed)


def _elbo(tiny_vae, batch):
  vae, config, _ = tiny_vae
  return evaluator_lib.Evaluator(*_functions(vae, config), _STRATEGY,
                                 2).terms(batch)["elbo"]


@pytest.mark.e2e
def test_estimate_is_above_the_elbo_and_grows_with_k(tiny_vae):
  images = tiny_vae[2]
  means = {}
  for k in (1, 10, 100, 1000):
    log_px = _evaluator(tiny_vae, k).log_likelihood(batch(images, 2))
    elbo_value = _elbo(tiny_vae, batch(images, 2))
    means[k] = float(np.mean(log_px))
  elbo_mean = float(np.mean(elbo_value))
  assert means[1] < means[10] < means[100] < means[1000]
  assert means[10] > elbo_mean and means[1000] > elbo_mean + 0.5


def test_one_sample_equals_the_elbo_in_expectation(tiny_vae):
  images = tiny_vae[2]
  differences = []
  for seed in range(8):
    log_px = _evaluator(tiny_vae, 1, seed).log_likelihood(
        batch(images, 2, seed=100 + seed))
    elbo_value = _elbo(tiny_vae, batch(images, 2, seed=100 + seed))
    differences.append(log_px.numpy() - elbo_value.numpy())
  differences = np.concatenate(differences)
  stderr = differences.std(ddof=1) / math.sqrt(len(differences))
  assert abs(differences.mean()) < 4 * stderr


@pytest.mark.e2e
def test_evaluation_counts_every_example_and_reports_active_units(
    tiny_vae, mnist):
  vae, config, _ = tiny_vae
  options = pipeline.PipelineOptions(global_batch_size=100, seed=0,
                                     binarize="static", noise_factor=0.0,
                                     latent_dim=2)
  dataset = pipeline.eval_dataset(
      tf.constant(mnist.test_images[:250]), tf.constant(mnist.test_labels[:250]),
      options)
  encode, log_likelihood = _functions(vae, config)
  evaluator = likelihood.ImportanceSampledEvaluator(
      encode, log_likelihood, _STRATEGY, (28, 28, 1), 2, 50,
      global_batch_size=100, seed=0)
  result = evaluator.evaluate(dataset)
  elbo = evaluator_lib.Evaluator(encode, log_likelihood, _STRATEGY,
                                 2).evaluate(dataset)
  assert result.examples == 250  # Including the short last batch.
  assert elbo["examples"] == 250
  z_mean = encode(tf.constant((mnist.test_images[:250] >= 128), tf.float32))[0]
  variances = np.var(z_mean.numpy().astype(np.float64), axis=0)
  np.testing.assert_allclose(elbo["unit_variances"], variances, rtol=1e-4)
  assert elbo["active_units"] == int(np.sum(variances > 0.01))
  assert np.isfinite(result.nll) and result.nll > 0
  assert result.nll <= -elbo["elbo"] + 3 * elbo["elbo_stderr"]


def test_chunk_is_a_divisor_of_k_within_the_row_budget():
  assert likelihood.samples_per_chunk(5000, 100) == 500
  assert likelihood.samples_per_chunk(5000, 128) == 250
  assert likelihood.samples_per_chunk(5000, 100, rows_per_chunk=4096) == 40
  assert likelihood.samples_per_chunk(7, 10_000) == 1
  assert likelihood.samples_per_chunk(3, 1) == 3


def test_chunks_hold_a_bounded_size_of_decoder_outputs():
  """A convolutional decoder's rows are ~20x a dense one's: its chunks are
  cut to `CHUNK_OUTPUT_BYTES`; the shipped dense decoders keep the default
  chunk (their estimates do not change)."""
  rows = {}
  for name in models.names():
    spec = models.get(name)
    vae = spec.build((28, 28, 1), spec.default_latent_dim)
    floats = base.decoder_floats(vae)
    rows[name] = likelihood.rows_per_chunk(floats)
    assert 4 * floats * rows[name] <= likelihood.CHUNK_OUTPUT_BYTES, name
  assert rows["conv"] < likelihood.DEFAULT_ROWS_PER_CHUNK // 5
  for name in ("dense", "mlp", "iwae_mlp", "iwae_mlp2"):
    assert rows[name] == likelihood.DEFAULT_ROWS_PER_CHUNK, name
  assert likelihood.rows_per_chunk(None) == likelihood.DEFAULT_ROWS_PER_CHUNK
  assert likelihood.rows_per_chunk(10 ** 12) == 1


def test_progress_lines_count_images_and_show_the_running_estimate():
  """A long estimate says how far it is, its running mean and standard error
  and the time left, and ends with the whole set's line, once; the result
  is the silent one's."""
  model = LinearGaussian()
  x = model.sample(80)
  batches = [batch(x[:40], 3), batch(x[40:], 3, seed=1)]
  batches[1]["batch_index"] = tf.constant(1, tf.int64)

  def evaluate(progress, seconds_after_first=0.0):
    evaluator = likelihood.ImportanceSampledEvaluator(
        model.encode, model.log_likelihood, _STRATEGY, (6,), 3,
        num_samples=50, global_batch_size=40, seed=0)
    evaluator.progress_seconds = 0.0  # A line after the first batch.

    def report(line):
      progress(line)
      evaluator.progress_seconds = seconds_after_first

    dataset = tf.data.Dataset.from_tensor_slices(
        {k: tf.stack([b[k] for b in batches]) for k in batches[0]})
    return evaluator.evaluate(dataset, total=80,
                              progress=progress and report)

  every_batch, first_and_end = [], []
  shown = evaluate(every_batch.append)
  assert shown == evaluate(None)
  assert evaluate(first_and_end.append, seconds_after_first=1e9) == shown
  for lines in (every_batch, first_and_end):
    # The second line is the last batch's, or the end's: never both.
    assert len(lines) == 2, lines
    assert re.fullmatch(r"NLL \(K=50\): 40/80 test images, NLL so far "
                        r"\d+\.\d\d ± \d+\.\d\d nats, 0:00:\d\d elapsed, "
                        r"ETA 0:00:\d\d", lines[0]), lines[0]
    assert lines[1].startswith("NLL (K=50): 80/80 test images, NLL so far "
                               f"{shown.nll:.2f} ± {shown.nll_stderr:.2f}")
    assert "ETA" not in lines[1]


@pytest.mark.parametrize("name", ["iwae_mlp", "iwae_mlp2"])
def test_the_compiled_estimate_is_the_uncompiled_one(name, mnist):
  """XLA changes only the float summation order: the noise is drawn outside
  the compiled chunk (XLA's normals differ from TensorFlow's), so each
  image's estimate agrees to float32 rounding, for one latent group and for
  a hierarchy's sampled terms."""
  tf.keras.utils.set_random_seed(0)
  vae = models.get(name).build((28, 28, 1), 50)
  config = ModelConfig(name=name, latent_dim=50)
  images = tf.constant((mnist.test_images[:24] >= 128).astype(np.float32))
  batch = {"inputs": images, "targets": images,
           "labels": tf.zeros([24], tf.int32),
           "weights": tf.ones([24]), "batch_index": tf.constant(0, tf.int64),
           "offset": tf.constant(0, tf.int64)}
  estimates = {}
  for jit_compile in (False, True):
    evaluator = likelihood.ImportanceSampledEvaluator(
        *_functions(vae, config), _STRATEGY, (28, 28, 1), 50, 60,
        global_batch_size=24, seed=0, rows_per_chunk=24 * 20,
        sampled=evaluator_lib.model_sampled_terms(
            vae, parts.objective(config)),
        jit_compile=jit_compile)
    assert evaluator.chunk == 20  # Three chunks, three noise draws.
    estimates[jit_compile] = tf.function(evaluator.log_likelihood)(
        batch).numpy()
  np.testing.assert_allclose(estimates[True], estimates[False], rtol=1e-5)
  assert np.all(np.isfinite(estimates[True]))
