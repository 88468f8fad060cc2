"""Test log-likelihood by importance sampling, as papers report it.

    log p(x) ~= log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x),  z_k ~ q(z | x)

with K = 5000 (Burda, Grosse & Salakhutdinov, 2015). The estimate is a lower
bound in expectation that tightens as K grows. Samples are taken in chunks and
combined with a running log-sum-exp in float64, so K = 5000 over the whole
test set runs in memory bounded by one chunk, under any tf.distribute
strategy. The noise is keyed on (seed, global batch, chunk) and drawn for the
whole global batch, so the numbers do not depend on the strategy. (The ELBO and the active units are `engine.eval.evaluator`'s.)
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from engine.devices import replica_sums
from engine.eval.evaluator import Encode, LogLikelihood, SampledTerms
from engine.objectives import elbo

_NLL_STREAM = 5
# Seconds between progress lines.
PROGRESS_SECONDS = 10.0
# Decoder rows (examples x samples) per chunk at most: about 160 MB of
# logits for 28x28 images, whatever K is. (The chunk keys the noise:
# changing it changes every estimate's draws.)
DEFAULT_ROWS_PER_CHUNK = 50_000
# What one chunk's decoder outputs may take (`rows_per_chunk`): a fixed
# size, not a share of this machine's memory, so that every machine draws
# the same noise and gets the same estimate.
CHUNK_OUTPUT_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class LikelihoodResult:
  """Test-set estimates, per example, in nats unless named otherwise.

  Attributes:
    nll: -log p(x), the K-sample importance-weighted estimate, averaged.
    nll_stderr: Its standard error over the test examples.
    bits_per_dim: `nll` / (pixels x ln 2).
    num_samples: K.
    examples: How many test examples were evaluated.
  """

  nll: float
  nll_stderr: float
  bits_per_dim: float
  num_samples: int
  examples: int

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _mean_and_stderr(sums) -> tuple[float, float]:
  """The mean NLL over the examples summed, and its standard error."""
  count = float(sums["count"])
  mean = float(sums["nll"]) / count
  variance = max(float(sums["nll_sq"]) / count - mean * mean, 0.0) * (
      count / (count - 1))
  return mean, math.sqrt(variance / count)


def rows_per_chunk(decoder_floats: Optional[int]) -> int:
  """Decoder rows per chunk for a decoder whose layers output
  `decoder_floats` floats per example (None: unknown, the default): as many
  as fit `CHUNK_OUTPUT_BYTES`, at most `DEFAULT_ROWS_PER_CHUNK`. A
  convolutional decoder's feature maps make a row tens of times larger than
  a dense one's."""
  if not decoder_floats:
    return DEFAULT_ROWS_PER_CHUNK
  return max(1, min(DEFAULT_ROWS_PER_CHUNK,
                    CHUNK_OUTPUT_BYTES // (4 * decoder_floats)))


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
    rows_per_chunk: Bound on examples x samples decoded at once (see
      `rows_per_chunk`).
    sampled: The model's `SampledTerms` (`evaluator.model_sampled_terms`),
      for one with no analytic KL: the log weights come from them.
    jit_compile: Compile each chunk's log-sum-exp with XLA, which fuses the
      decoder's output, the likelihood and the log-sum-exp instead of
      materializing each ([examples x samples, pixels] a chunk): several
      times faster for dense decoders; slower for convolutional ones on a
      CPU (`compilation.xla_by_default` decides, as for training).
  """

  def __init__(self, encode: Encode, log_likelihood: LogLikelihood,
               strategy: tf.distribute.Strategy,
               image_shape: tuple, latent_dim: int, num_samples: int, global_batch_size: int,
               seed: int, rows_per_chunk: int = DEFAULT_ROWS_PER_CHUNK,
               conditional: bool = False,
               sampled: Optional[SampledTerms] = None,
               jit_compile: bool = False):
    if num_samples < 1:
      raise ValueError(f"num_samples must be positive, got {num_samples}")
    self._encode = encode
    self._sampled = sampled
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
        {"count": [], "nll": [], "nll_sq": []}, tf.float64, "nll")
    self.jit_compile = jit_compile
    self._add_chunk = (tf.function(self._chunk_log_sum, jit_compile=True)
                       if jit_compile else self._chunk_log_sum)
    self._evaluate = tf.function(self._evaluate_batch)
    self.progress_seconds = PROGRESS_SECONDS

  def _chunk_noise(self, batch, chunk_index, size):
    key = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(
            tf.constant([self._seed, _NLL_STREAM], tf.int64),
            batch["batch_index"]), tf.cast(chunk_index, tf.int64))
    noise = tf.random.stateless_normal(
        [self._global_batch_size, self.chunk, self._latent_dim], key)
    offset = tf.cast(batch["offset"], tf.int32)
    return noise[offset:offset + size]

  def log_likelihood(self, batch) -> tf.Tensor:
    """log p^(x), float64 [B], of a batch."""
    targets = batch["targets"]
    size = tf.shape(targets)[0]
    condition = (batch["labels"],) if self._conditional else ()
    posterior = ()
    if self._sampled is None:
      posterior = tuple(tf.cast(t, tf.float32) for t in self._encode(
          batch["inputs"], *condition))
    log_sum = tf.fill([size], tf.constant(-np.inf, tf.float64))
    for chunk_index in tf.range(self.num_samples // self.chunk):
      # Drawn outside the compiled chunk: XLA's normal draws differ from
      # TensorFlow's, and the estimate must not depend on the compilation.
      noise = self._chunk_noise(batch, chunk_index, size)
      log_sum = self._add_chunk(log_sum, batch["inputs"], targets, noise,
                                posterior, condition)
    return log_sum - math.log(self.num_samples)

  def _chunk_log_sum(self, log_sum, inputs, targets, noise, posterior,
                     condition):
    """`log_sum` [B] plus the log-sum-exp of one chunk's log weights."""
    if self._sampled is not None:
      reconstruction, kl_per_unit = self._sampled(inputs, targets, noise,
                                                  *condition)
      log_weights = -reconstruction - tf.reduce_sum(kl_per_unit, axis=2)
    else:
      log_weights, _, _ = elbo.log_importance_weights(
          self._log_likelihood, targets, *posterior, noise, *condition)
    return tf.experimental.numpy.logaddexp(
        log_sum, tf.reduce_logsumexp(tf.cast(log_weights, tf.float64),
                                     axis=1))

  def _step(self, batch):
    log_px = self.log_likelihood(batch)
    weights = batch["weights"]
    self._sums.add(count=tf.reduce_sum(tf.cast(weights, tf.float64)),
                   nll=replica_sums.weighted_sum(-log_px, weights),
                   nll_sq=replica_sums.weighted_sum(tf.square(log_px),
                                                    weights))

  def _evaluate_batch(self, batch):
    self._strategy.run(self._step, args=(batch,))

  def evaluate(self, dataset, total: Optional[int] = None,
               progress: Optional[Callable[[str], None]] = None
               ) -> LikelihoodResult:
    """Evaluates every example of a distributed (or plain) eval dataset.

    Args:
      dataset: The padded, weighted eval dataset (`pipeline.eval_dataset`).
      total: How many real examples it holds, for the progress line's ETA.
      progress: Called with a progress line (examples done, the running
        estimate and its standard error, the time left) every
        `progress_seconds`, and at the end if it was called before; None:
        silent.
    """
    started = last = time.perf_counter()
    shown = None  # The examples the last progress line counted.
    for batch in dataset:
      self._evaluate(batch)
      now = time.perf_counter()
      if progress is not None and now - last >= self.progress_seconds:
        sums = self._sums.read()
        last, shown = now, float(sums["count"])
        progress(self._progress_line(sums, now - started, total))
    sums = self._sums.read_and_reset()
    count = float(sums["count"])
    if count < 2:
      raise ValueError("the likelihood needs at least two test examples")
    # A long estimate ends its progress lines with the whole set's, once.
    if shown is not None and shown != count:
      progress(self._progress_line(sums, time.perf_counter() - started,
                                   total))
    nll, nll_stderr = _mean_and_stderr(sums)
    return LikelihoodResult(
        nll=nll, nll_stderr=nll_stderr,
        bits_per_dim=nll / (self._pixels * math.log(2.0)),
        num_samples=self.num_samples, examples=int(count))

  def _progress_line(self, sums, seconds: float,
                     total: Optional[int]) -> str:
    done = int(sums["count"])
    estimate = ""
    if done >= 2:
      nll, stderr = _mean_and_stderr(sums)
      estimate = f", NLL so far {nll:.2f} ± {stderr:.2f} nats"
    left = ""
    if total and done:
      left = (f", ETA {_clock(seconds * max(total - done, 0) / done)}"
              if done < total else "")
    of = f"/{total:,}" if total else ""
    return (f"NLL (K={self.num_samples}): {done:,}{of} test images"
            f"{estimate}, {_clock(seconds)} elapsed{left}")


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
