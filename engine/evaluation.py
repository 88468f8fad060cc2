"""A run's evaluations: test ELBO (and NLL), image summaries, and figures.

Everything here reads the test set through its padded, weighted batches
(`pipeline.eval_dataset`), and the model only through its contract
(`models.base.VariationalAutoencoder`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from engine import figures
from engine import latent_units
from engine import sample_quality
from engine import summaries
from engine.build import RunParts
from engine.data import pipeline


def figure_functions(vae) -> tuple:
  """(encode: images -> z_mean, decode: z -> probabilities) on numpy arrays,
  compiled once each, as `figures.write_run_figures` takes them."""
  encode = tf.function(vae.posterior_mean, reduce_retracing=True)
  decode = tf.function(vae.decoder_probabilities, reduce_retracing=True)
  return (lambda images: encode(tf.constant(images, tf.float32)).numpy(),
          lambda z: decode(tf.constant(z, tf.float32)).numpy())


def prior_samples(vae, count: int, seed: int,
                  batch_size: int = 1000) -> np.ndarray:
  """`count` images decoded from z ~ N(0, I) (their means, in [0, 1])."""
  z = tf.random.stateless_normal([count, vae.latent_dim], seed=[seed, 11])
  decode = tf.function(vae.decoder_probabilities, reduce_retracing=True)
  return np.concatenate([decode(z[i:i + batch_size]).numpy()
                         for i in range(0, count, batch_size)])


class RunEvaluation:
  """Evaluates a built run's model on its test set.

  Args:
    parts: The run (`engine.build.build`).
    say: Prints one line to the user.
  """

  def __init__(self, parts: RunParts, say: Callable[[str], None]):
    self.parts = parts
    self.say = say
    self.kl_per_unit = None  # Of the latest evaluation, for the figures.
    # Compiled once: a new tf.function per evaluation would retrace each time.
    self._posterior = tf.function(parts.vae.posterior, reduce_retracing=True)

  def first_test_examples(self, count: int) -> dict:
    """Up to `count` test examples, in order, as numpy arrays (no padding)."""
    parts = self.parts
    options = dataclasses.replace(parts.options, global_batch_size=count,
                                  samples_per_example=1)
    return pipeline.real_examples(next(iter(pipeline.eval_dataset(
        parts.test_images, parts.test_labels, options))))

  def __call__(self, step: int) -> dict:
    """Test ELBO (and NLL if configured) at `step`: printed and logged.

    Returns:
      The metrics written (nats per example; NLL terms when configured).
    """
    parts = self.parts
    metrics = parts.evaluator.evaluate(parts.eval_data)
    examples = int(metrics.pop("examples"))
    if examples != parts.num_test_examples:
      raise RuntimeError(f"evaluated {examples} test examples, expected "
                         f"{parts.num_test_examples}")
    self._image_summaries(step)
    kl_per_unit, unit_variances = latent_units.unit_statistics(
        parts.vae, self.first_test_examples(parts.num_test_examples)["inputs"],
        posterior=self._posterior)
    parts.writer.histogram("eval", step, "kl_per_unit", kl_per_unit)
    metrics["active_units"] = latent_units.active_units(unit_variances)
    self.kl_per_unit = kl_per_unit
    bits = ""
    if parts.config.model.reconstruction_loss == "discretized_logistic":
      # A distribution over 8-bit levels: -ELBO in bits per sub-pixel is
      # what the literature compares (an upper bound on the NLL's).
      metrics["elbo_bits_per_dim"] = -metrics["elbo"] / (
          math.prod(parts.vae.image_shape) * math.log(2.0))
      bits = f", {metrics['elbo_bits_per_dim']:.4f} bits/dim"
    self.say(f"eval step {step}: test ELBO {metrics['elbo']:.2f} nats "
             f"(reconstruction {metrics['reconstruction']:.2f}, "
             f"kl {metrics['kl']:.2f}{bits}) over {examples} test images, "
             f"{metrics['active_units']}/{parts.vae.latent_dim} active units")
    if parts.nll_evaluator is not None:
      result = parts.nll_evaluator.evaluate(parts.eval_data)
      metrics.update(nll=result.nll, nll_stderr=result.nll_stderr,
                     bits_per_dim=result.bits_per_dim)
      self.say(f"eval step {step}: test NLL {result.nll:.2f} "
               f"± {result.nll_stderr:.2f} nats "
               f"({result.bits_per_dim:.4f} bits/dim, "
               f"K={result.num_samples})")
    parts.writer.scalars("eval", step, metrics)
    return metrics

  def sample_quality(self, step: int, count: int = 10_000) -> dict:
    """Scores `count` prior samples with the dataset's classifier (see
    `engine.sample_quality`); printed and logged."""
    parts = self.parts
    classifier = sample_quality.load_or_train(
        parts.config.train.model_dir, parts.train_images.numpy(),
        parts.data.train_labels, parts.data.test_images,
        parts.data.test_labels, seed=parts.config.train.seed)
    scores = sample_quality.score(classifier, parts.data.test_images,
                                  prior_samples(parts.vae, count,
                                                parts.config.train.seed))
    parts.writer.scalars("eval", step, scores)
    self.say(f"eval step {step}: {count} samples: class entropy "
             f"{scores['sample_class_entropy']:.3f} of "
             f"{scores['max_class_entropy']:.3f} nats, Fréchet distance in "
             f"the classifier's features {scores['classifier_frechet_distance']:.2f}"
             f" (classifier test accuracy {scores['classifier_test_accuracy']:.4f})")
    return scores

  def _image_summaries(self, step: int) -> None:
    vae = self.parts.vae
    inputs = tf.constant(self.first_test_examples(8)["inputs"])
    reconstructed = vae.decoder_probabilities(vae.posterior_mean(inputs))
    pairs = tf.concat([inputs, reconstructed], axis=0).numpy()
    self.parts.writer.images("eval", step, "inputs_vs_reconstructions",
                             figures.tile(pairs, len(inputs)))
    prior = tf.random.stateless_normal([64, vae.latent_dim],
                                       seed=[self.parts.config.train.seed, 7])
    self.parts.writer.images(
        "eval", step, "prior_samples",
        figures.tile(np.asarray(vae.decoder_probabilities(prior)), 8))

  def write_figures(self) -> list:
    """Every figure of the run, into `<model_dir>/figures`."""
    parts = self.parts
    test = self.first_test_examples(parts.num_test_examples)
    encode, decode = figure_functions(parts.vae)
    model_dir = parts.config.train.model_dir
    return figures.write_run_figures(
        encode, decode, parts.vae.latent_dim, test["inputs"],
        test["targets"], test["labels"], summaries.read_metrics(model_dir),
        os.path.join(model_dir, "figures"), parts.config.train.seed,
        denoising=parts.config.data.noise_factor > 0,
        kl_per_unit=self.kl_per_unit)
