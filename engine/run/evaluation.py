"""A run's evaluation (the controller's evaluator) and what is done with
each evaluation (the controller's eval actions).

`RunEvaluator.evaluate(step)` runs the one-pass evaluator (test ELBO and
per-unit statistics, `engine.eval.evaluator`) and, when asked for, the
importance-weighted NLL over the test set's padded, weighted batches, and
returns the metrics. `ReportEvaluation` prints and logs them;
`ImageSummaries` logs reconstructions and prior samples to TensorBoard.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from engine.data import pipeline
from engine.eval import evaluator as evaluator_lib
from engine.eval import likelihood
from engine.train.actions import Say
from engine.viz import plots


def _on_numpy(function):
  """`function(x, labels)` compiled once, on numpy arrays (labels may be
  None; an unconditional model ignores them)."""
  compiled = tf.function(function, reduce_retracing=True)

  def call(x, labels):
    labels = np.zeros(len(x)) if labels is None else np.asarray(labels)
    return compiled(tf.constant(x, tf.float32),
                    tf.constant(labels, tf.int32)).numpy()

  return call


def figure_functions(vae) -> tuple:
  """(encode: (images, labels) -> z_mean, decode: (z, labels) ->
  probabilities) on numpy arrays, as the figures of the latent space take
  them: a hierarchical model's top group (the lower groups decoded at their
  prior means)."""
  return _on_numpy(vae.top_mean), _on_numpy(vae.decode_top)


def whole_model_functions(vae) -> tuple:
  """(reconstruct: (images, labels) -> probabilities through every latent
  group's posterior mean, sample: (noise [N, latent_dim], labels) ->
  probabilities of the ancestral draws z ~ p(z) made from the noise), on
  numpy arrays. For one latent group: decode(encode(x)) and decode(noise)."""
  return (_on_numpy(lambda images, labels: vae.decoder_probabilities(
              vae.posterior_mean(images, labels), labels)),
          _on_numpy(lambda noise, labels: vae.decoder_probabilities(
              vae.prior_sample(noise), labels)))


@dataclasses.dataclass(frozen=True)
class TestSet:
  """The test split as the run holds it (one copy of each tensor).

  Attributes:
    images, labels: uint8 images and int labels, as tensors.
    options: The pipeline's options (noise, binarization, seed).
    distributed: The strategy's padded, weighted batches of it.
  """

  images: tf.Tensor
  labels: tf.Tensor
  options: pipeline.PipelineOptions
  distributed: object

  @property
  def size(self) -> int:
    return int(self.images.shape[0])

  def first(self, count: int) -> dict:
    """Up to `count` examples, in order, as numpy arrays (no padding)."""
    options = dataclasses.replace(self.options, global_batch_size=count,
                                  samples_per_example=1)
    return pipeline.real_examples(next(iter(pipeline.eval_dataset(
        self.images, self.labels, options))))


class RunEvaluator:
  """Evaluates a run's model on its test set.

  Args:
    evaluator: The test ELBO and per-unit statistics.
    test: The test set.
    nll: The importance-weighted NLL (None: not asked for).
    bits_per_dim_pixels: Sub-pixels of an image, when the likelihood is
      over 8-bit levels (the ELBO is then also reported in bits/dim).
    progress: Takes the NLL estimate's progress lines (None: silent).

  It evaluates whatever weights the model holds: the controller chooses
  them (`controller.Controller._evaluation`). With a moving average, it
  calls `evaluate_training_weights` on the raw weights first, then
  `evaluate` on the average, which reports both.
  """

  def __init__(self, evaluator: evaluator_lib.Evaluator, test: TestSet,
               nll: Optional[likelihood.ImportanceSampledEvaluator] = None,
               bits_per_dim_pixels: Optional[int] = None,
               progress: Optional[Callable[[str], None]] = None):
    self.progress = progress
    self.evaluator = evaluator
    self.test = test
    self.nll = nll
    self.bits_per_dim_pixels = bits_per_dim_pixels
    self.kl_per_unit = None  # Of the latest evaluation, for the figures.

  def evaluate_training_weights(self, step: int) -> dict:
    """The test ELBO of the weights the model holds, as `elbo_raw`: the
    training weights' score, beside their moving average's."""
    del step  # Every evaluation covers the whole test set.
    return {"elbo_raw": self.evaluator.evaluate(self.test.distributed)[
        "elbo"]}

  def evaluate(self, step: int,
               training_metrics: Optional[dict] = None) -> dict:
    """The test metrics at `step` (nats per example; NLL terms when asked
    for; `kl_per_unit` as an array), with `training_metrics` (what
    `evaluate_training_weights` gave, when the model holds other weights)
    among them."""
    del step  # Every evaluation covers the whole test set.
    metrics = self.evaluator.evaluate(self.test.distributed)
    if metrics["examples"] != self.test.size:
      raise RuntimeError(f"evaluated {metrics['examples']} test examples, "
                         f"expected {self.test.size}")
    self.kl_per_unit = metrics["kl_per_unit"]
    if self.bits_per_dim_pixels:
      # A distribution over 8-bit levels: -ELBO in bits per sub-pixel is
      # what the literature compares (an upper bound on the NLL's).
      metrics["elbo_bits_per_dim"] = -metrics["elbo"] / (
          self.bits_per_dim_pixels * math.log(2.0))
    metrics.update(training_metrics or {})
    if self.nll is not None:
      result = self.nll.evaluate(self.test.distributed, self.test.size,
                                 self.progress)
      metrics.update(nll=result.nll, nll_stderr=result.nll_stderr,
                     bits_per_dim=result.bits_per_dim,
                     nll_samples=result.num_samples)
    return metrics


class ReportEvaluation:
  """Prints an evaluation's lines and logs its scalars and the KL of each
  latent unit (a histogram)."""

  def __init__(self, writer, say: Say, latent_dim: int,
               latent_groups: tuple = ()):
    self.writer = writer
    self.say = say
    self.latent_dim = latent_dim
    self.latent_groups = latent_groups

  def __call__(self, step: int, metrics: dict) -> None:
    bits = (f", {metrics['elbo_bits_per_dim']:.4f} bits/dim"
            if "elbo_bits_per_dim" in metrics else "")
    raw = (f", raw weights {metrics['elbo_raw']:.2f}; the average's:"
           if "elbo_raw" in metrics else "")
    groups = ", ".join(f"z{index} {metrics[f'active_units_z{index}']}/"
                       f"{size}" for index, size in enumerate(
                           self.latent_groups, start=1)
                       if f"active_units_z{index}" in metrics)
    self.say(f"eval step {step}: test ELBO{raw} {metrics['elbo']:.2f} nats "
             f"(reconstruction {metrics['reconstruction']:.2f}, "
             f"kl {metrics['kl']:.2f}{bits}) over {metrics['examples']} test "
             f"images, {metrics['active_units']}/{self.latent_dim} active "
             "units" + (f" ({groups})" if groups else ""))
    if "nll" in metrics:
      self.say(f"eval step {step}: test NLL {metrics['nll']:.2f} "
               f"± {metrics['nll_stderr']:.2f} nats "
               f"({metrics['bits_per_dim']:.4f} bits/dim, "
               f"K={metrics['nll_samples']})")
    self.writer.histogram("eval", step, "kl_per_unit", metrics["kl_per_unit"])
    self.writer.scalars("eval", step, scalars(metrics))


def scalars(metrics: dict) -> dict:
  """The metrics that are numbers (what summaries and result.json hold)."""
  return {name: value for name, value in metrics.items()
          if np.ndim(value) == 0 and name not in ("examples", "nll_samples")}


class ImageSummaries:
  """Logs 8 test images over their reconstructions, and 64 prior samples
  (a conditional model's: each row of 8 shows all classes in turn)."""

  def __init__(self, vae, test: TestSet, writer, seed: int):
    self.reconstruct, self.sample = whole_model_functions(vae)
    self.latent_dim, self.num_classes = vae.latent_dim, vae.num_classes
    self.test, self.writer, self.seed = test, writer, seed

  def __call__(self, step: int, metrics: dict) -> None:
    del metrics
    test = self.test.first(8)
    reconstructed = self.reconstruct(test["inputs"], test["labels"])
    pairs = np.concatenate([test["inputs"], reconstructed], axis=0)
    self.writer.images("eval", step, "inputs_vs_reconstructions",
                       plots.tile(pairs, len(test["inputs"])))
    prior = tf.random.stateless_normal([64, self.latent_dim],
                                       seed=[self.seed, 7])
    labels = np.arange(64) % max(self.num_classes, 1)
    self.writer.images("eval", step, "prior_samples",
                       plots.tile(self.sample(prior.numpy(), labels), 8))
