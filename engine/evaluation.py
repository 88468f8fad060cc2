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
from engine import run_figures
from engine import sample_quality
from engine import summaries
from engine.build import RunParts
from engine.data import pipeline


def figure_functions(vae) -> tuple:
  """(encode: (images, labels) -> z_mean, decode: (z, labels) ->
  probabilities) on numpy arrays, compiled once each, as
  `run_figures.write_run_figures` takes them. Labels may be None; an
  unconditional model ignores them."""
  encode = tf.function(vae.posterior_mean, reduce_retracing=True)
  decode = tf.function(vae.decoder_probabilities, reduce_retracing=True)

  def as_labels(labels, count):
    return tf.constant(np.zeros(count) if labels is None
                       else np.asarray(labels), tf.int32)

  return (lambda images, labels: encode(
              tf.constant(images, tf.float32),
              as_labels(labels, len(images))).numpy(),
          lambda z, labels: decode(tf.constant(z, tf.float32),
                                   as_labels(labels, len(z))).numpy())


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
    self._encode, self._decode = figure_functions(parts.vae)

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
    test = self.first_test_examples(parts.num_test_examples)
    kl_per_unit, unit_variances = latent_units.unit_statistics(
        parts.vae, test["inputs"], posterior=self._posterior,
        labels=test["labels"])
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
    samples, labels = sample_quality.prior_samples(
        self._decode, parts.vae.latent_dim, count, parts.config.train.seed,
        parts.vae.num_classes)
    scores = sample_quality.score(classifier, parts.data.test_images,
                                  samples, labels)
    parts.writer.scalars("eval", step, scores)
    self.say(f"eval step {step}: {sample_quality.describe(scores, count)}")
    return scores

  def _image_summaries(self, step: int) -> None:
    vae = self.parts.vae
    test = self.first_test_examples(8)
    reconstructed = self._decode(self._encode(test["inputs"], test["labels"]),
                                 test["labels"])
    pairs = np.concatenate([test["inputs"], reconstructed], axis=0)
    self.parts.writer.images("eval", step, "inputs_vs_reconstructions",
                             figures.tile(pairs, len(test["inputs"])))
    prior = tf.random.stateless_normal([64, vae.latent_dim],
                                       seed=[self.parts.config.train.seed, 7])
    # A conditional model's: each row of 8 shows all classes in turn.
    labels = np.arange(64) % max(vae.num_classes, 1)
    self.parts.writer.images(
        "eval", step, "prior_samples",
        figures.tile(self._decode(prior.numpy(), labels), 8))

  def write_figures(self) -> list:
    """Every figure of the run, into `<model_dir>/figures`."""
    parts = self.parts
    test = self.first_test_examples(parts.num_test_examples)
    model_dir = parts.config.train.model_dir
    return run_figures.write_run_figures(
        self._encode, self._decode, parts.vae.latent_dim, test["inputs"],
        test["targets"], test["labels"], summaries.read_metrics(model_dir),
        os.path.join(model_dir, "figures"), parts.config.train.seed,
        denoising=parts.config.data.noise_factor > 0,
        kl_per_unit=self.kl_per_unit, num_classes=parts.vae.num_classes)
