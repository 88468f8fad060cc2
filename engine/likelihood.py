"""Test log-likelihood by importance sampling, as papers report it.

    log p(x) ~= log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),  z_k ~ q(z | x)

with K = 5000 (Burda, Grosse & Salakhutdinov, 2015). The estimate is a lower
bound in expectation that tightens as K grows. Samples are taken in chunks and
combined with a running log-sum-exp in float64, so K = 5000 over the whole
test set runs in memory bounded by one chunk, under any tf.distribute
strategy. The noise is keyed on (seed, global batch, chunk) and drawn for the
whole global batch, so the numbers do not depend on the strategy.

Alongside it: the ELBO (analytic KL) of the same examples, and the number of
active latent units, Burda et al.'s A_u = Cov_x(E_q[u | x]) > 0.01.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import tensorflow as tf

from engine import elbo
from engine import replica_sums
from engine.config import ModelConfig

ACTIVE_UNIT_THRESHOLD = 1e-2
_NLL_STREAM = 5
# Decoder rows (examples x samples) per chunk: about 160 MB of logits for
# 28x28 images, whatever K is.
DEFAULT_ROWS_PER_CHUNK = 50_000

# images -> (z_mean, z_log_var); conditional: (images, labels) -> ...
Encode = Callable[..., tuple]
# (targets [N, ...], z [N, D]) -> log p(targets | z) [N]; conditional:
# (targets, z, labels [N]) -> log p(targets | z, labels).
LogLikelihood = Callable[..., tf.Tensor]


@dataclasses.dataclass(frozen=True)
class LikelihoodResult:
  """Test-set estimates, per example, in nats unless named otherwise.

  Attributes:
    nll: -log p(x), the K-sample importance-weighted estimate, averaged.
    nll_stderr: Its standard error over the test examples.
    bits_per_dim: `nll` / (pixels x ln 2).
    elbo: The ELBO (analytic KL, one sample) of the same examples.
    elbo_stderr: Its standard error.
    active_units: Latent units whose posterior mean varies more than 0.01
      across the test set.
    unit_variances: That variance, per latent unit.
    num_samples: K.
    examples: How many test examples were evaluated.
  """

  nll: float
  nll_stderr: float
  bits_per_dim: float
  elbo: float
  elbo_stderr: float
  active_units: int
  unit_variances: tuple
  num_samples: int
  examples: int

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def samples_per_chunk(num_samples: int, batch_size: int,
                      rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK) -> int:
  """The largest divisor of K that keeps batch x chunk within the row budget."""
  chunk = max(1, min(num_samples, rows_per_chunk // max(batch_size, 1)))
  while num_samples % chunk:
    chunk -= 1
  return chunk


class ImportanceSampledEvaluator:
  """Estimates the test log-likelihood of a model given as two functions.

  The prior is N(0, I) and q(z | x) the encoder's diagonal Gaussian; the
  decoder enters only through `log_likelihood`, so any p(x | z) works (tests
  use a linear-Gaussian one, whose marginal is known in closed form).
  Create it inside `strategy.scope()`.

  Args:
    encode: `images -> (z_mean, z_log_var)`, float32 [B, D] each.
    log_likelihood: `(targets [N, ...], z [N, D]) -> log p(x | z) [N]`.
    conditional: The model is conditional on the label: `encode` and
      `log_likelihood` take the batch's labels as one more argument, and the
      estimate is of log p(x | y).
    strategy: The tf.distribute strategy the evaluation runs under.
    image_shape: Shape of one image (for bits per dimension).
    latent_dim: D.
    num_samples: K, importance samples per example.
    global_batch_size: The evaluation dataset's global batch size.
    seed: Keys the importance-sampling noise.
    rows_per_chunk: Bound on examples x samples decoded at once.
  """

  def __init__(self, encode: Encode, log_likelihood: LogLikelihood,
               strategy: tf.distribute.Strategy,
               image_shape: tuple, latent_dim: int, num_samples: int, global_batch_size: int,
               seed: int, rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
               conditional: bool = False):
    if num_samples < 1:
      raise ValueError(f"num_samples must be positive, got {num_samples}")
    self._encode = encode
    self._log_likelihood = log_likelihood
    self._conditional = conditional
    self._strategy = strategy
    self._pixels = int(np.prod(image_shape))
    self._latent_dim = latent_dim
    self.num_samples = num_samples
    self._global_batch_size = global_batch_size
    self._seed = seed
    self.chunk = samples_per_chunk(num_samples, global_batch_size,
                                   rows_per_chunk)
    self._sums = replica_sums.ReplicaSums(
        {"count": [], "nll": [], "nll_sq": [], "elbo": [], "elbo_sq": [],
         "mean": [latent_dim], "mean_sq": [latent_dim]}, tf.float64, "nll")
    self._evaluate = tf.function(self._evaluate_dataset)

  def _chunk_noise(self, batch, chunk_index, size):
    key = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(
            tf.constant([self._seed, _NLL_STREAM], tf.int64),
            batch["batch_index"]), tf.cast(chunk_index, tf.int64))
    noise = tf.random.stateless_normal(
        [self._global_batch_size, self.chunk, self._latent_dim], key)
    offset = tf.cast(batch["offset"], tf.int32)
    return noise[offset:offset + size]

  def log_likelihood(self, batch) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(log p^(x) float64 [B], ELBO float32 [B], z_mean [B, D]) of a batch."""
    targets = batch["targets"]
    size = tf.shape(targets)[0]
    condition = (batch["labels"],) if self._conditional else ()
    z_mean, z_log_var = self._encode(batch["inputs"], *condition)
    z_mean = tf.cast(z_mean, tf.float32)
    z_log_var = tf.cast(z_log_var, tf.float32)
    log_sum = tf.fill([size], tf.constant(-np.inf, tf.float64))
    for chunk_index in tf.range(self.num_samples // self.chunk):
      log_weights, _, _ = elbo.log_importance_weights(
          self._log_likelihood, targets, z_mean, z_log_var,
          self._chunk_noise(batch, chunk_index, size), *condition)
      log_sum = tf.experimental.numpy.logaddexp(
          log_sum,
          tf.reduce_logsumexp(tf.cast(log_weights, tf.float64), axis=1))
    log_px = log_sum - math.log(self.num_samples)
    elbo_value = self._log_likelihood(
        targets, z_mean + tf.exp(0.5 * z_log_var) * batch["epsilon"],
        *condition) - elbo.gaussian_kl(z_mean, z_log_var)
    return log_px, elbo_value, z_mean

  def _step(self, batch):
    log_px, elbo_value, z_mean = self.log_likelihood(batch)
    # Padding rows (weight 0) never reach a sum, even if not finite.
    weights = tf.cast(batch["weights"], tf.float64)
    real = weights > 0

    def weighted(values):
      values = tf.cast(values, tf.float64)
      mask = tf.reshape(real, [-1] + [1] * (values.shape.rank - 1))
      scale = tf.reshape(weights, tf.shape(mask))
      return tf.reduce_sum(tf.where(mask, scale * values, 0.0), axis=0)

    self._sums.add(count=tf.reduce_sum(weights),
                   nll=weighted(-log_px),
                   nll_sq=weighted(tf.square(log_px)),
                   elbo=weighted(elbo_value),
                   elbo_sq=weighted(tf.square(
                       tf.cast(elbo_value, tf.float64))),
                   mean=weighted(z_mean),
                   mean_sq=weighted(tf.square(tf.cast(z_mean, tf.float64))))

  def _evaluate_dataset(self, dataset):
    for batch in dataset:
      self._strategy.run(self._step, args=(batch,))

  def evaluate(self, dataset) -> LikelihoodResult:
    """Evaluates every example of a distributed (or plain) eval dataset."""
    self._evaluate(dataset)
    sums = self._sums.read_and_reset()
    count = float(sums["count"])
    if count < 2:
      raise ValueError("the likelihood needs at least two test examples")

    def mean_and_stderr(total, total_sq):
      mean = total / count
      variance = max(total_sq / count - mean * mean, 0.0) * count / (count - 1)
      return float(mean), math.sqrt(variance / count)

    nll, nll_stderr = mean_and_stderr(sums["nll"], sums["nll_sq"])
    elbo_mean, elbo_stderr = mean_and_stderr(sums["elbo"], sums["elbo_sq"])
    unit_mean = sums["mean"] / count
    unit_variances = np.maximum(sums["mean_sq"] / count - unit_mean ** 2, 0.0)
    return LikelihoodResult(
        nll=nll, nll_stderr=nll_stderr,
        bits_per_dim=nll / (self._pixels * math.log(2.0)),
        elbo=elbo_mean, elbo_stderr=elbo_stderr,
        active_units=int(np.sum(unit_variances > ACTIVE_UNIT_THRESHOLD)),
        unit_variances=tuple(float(v) for v in unit_variances),
        num_samples=self.num_samples, examples=int(count))


def model_functions(vae, model_config: ModelConfig
                    ) -> tuple[Encode, LogLikelihood]:
  """(encode, log_likelihood) of an in-memory `VariationalAutoencoder`."""
  return vae.posterior, elbo.decoder_log_likelihood(vae, model_config)


def export_functions(exported, model_config: ModelConfig
                     ) -> tuple[Encode, LogLikelihood]:
  """(encode, log_likelihood) of a loaded vae-engine SavedModel.

  Args:
    exported: An `engine.exported.Exported`.
    model_config: The likelihood the model was trained with.
  """

  def encode(images, labels=None):
    outputs = exported.encode(images, labels)
    return outputs["z_mean"], outputs["z_log_var"]

  def log_likelihood(targets, z, labels=None):
    decoded = exported.decode(z, labels)
    return -elbo.reconstruction_nll(model_config, targets, decoded["logits"],
                                    decoded.get("log_scale"))

  return encode, log_likelihood
