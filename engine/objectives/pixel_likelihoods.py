"""The decoder's likelihoods p(x | z), as negative log-likelihoods in nats
summed over an example's sub-pixels (`negative_log_likelihood` picks one):

- `bernoulli`: binary (or grey, as probabilities) pixels, from logits;
- `gaussian`: N(x | sigmoid(logits), stddev^2) with a fixed stddev;
- `discretized_logistic` and `gaussian_learned`, for 8-bit images with a
  learned scale per sub-pixel, below.

The last two take the decoder's logits (the mean is `sigmoid(logits)`, in [0, 1])
and a learned log-scale (`models.learned_scale.LearnedScale`), and return the negative
log-likelihood summed over an example's sub-pixels, in nats.

- Discretized logistic (Kingma et al. 2016, IAF; Salimans et al. 2017,
  PixelCNN++): each sub-pixel's 256 levels, rescaled to [-1, 1], get the
  mass a logistic of that mean and scale puts on their bin; the two end bins
  take the tails. A proper distribution over the 256 levels, so its NLL in
  bits per sub-pixel is comparable across models.
- Gaussian with a learned variance: N(x | mean, exp(log_scale)^2), a density
  on [0, 1] (its "NLL" can be negative).
"""

from __future__ import annotations

import math

import tensorflow as tf

# log_scale below this makes the bins' mass underflow to 0 (PixelCNN++).
MIN_LOG_SCALE = -7.0
_HALF_BIN = 1.0 / 255.0  # Half a bin's width on [-1, 1].


LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic",
               "gaussian_learned")
# The likelihoods whose scale is a learned weight (`models.learned_scale.LearnedScale`).
LEARNED_SCALE = ("discretized_logistic", "gaussian_learned")


def _per_example(values: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)


def bernoulli_nll(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """-log Bernoulli(targets | sigmoid(logits)), summed per example [B]."""
  return _per_example(tf.nn.sigmoid_cross_entropy_with_logits(
      labels=targets, logits=logits))


def gaussian_nll(targets: tf.Tensor, logits: tf.Tensor,
                 stddev: float) -> tf.Tensor:
  """-log N(targets | sigmoid(logits), stddev^2), summed per example [B]."""
  mean = tf.sigmoid(logits)
  per_pixel = (0.5 * tf.square((targets - mean) / stddev)
               + math.log(stddev) + 0.5 * math.log(2.0 * math.pi))
  return _per_example(per_pixel)


def negative_log_likelihood(likelihood: str, targets: tf.Tensor,
                            logits: tf.Tensor, log_scale=None,
                            gaussian_stddev: float = 0.1) -> tf.Tensor:
  """-log p(targets | logits) under `likelihood`, summed per example [B].

  Args:
    likelihood: One of `LIKELIHOODS`.
    targets: float32 in [0, 1].
    logits: The decoder's logits (any float dtype; computed in float32).
    log_scale: The learned per-sub-pixel log-scale (`LEARNED_SCALE` only).
    gaussian_stddev: The `gaussian` likelihood's fixed std-dev.
  """
  # Per sub-pixel arithmetic on [N, sub-pixels] rather than [N, H, W, C]:
  # with one channel innermost, XLA:CPU emits a scalar loop with index
  # divisions for every element of a 4-D shape, and a vectorized one for a
  # 2-D shape. Vector and scalar code round differently in the last bits.
  rows, rank = tf.shape(logits)[0], logits.shape.rank
  targets = tf.reshape(targets, [rows, -1])
  logits = tf.reshape(tf.cast(logits, tf.float32), [rows, -1])
  if log_scale is not None:
    # The model's own [H, W, C], or an export's, one per example.
    log_scale = tf.reshape(log_scale, [-1] if log_scale.shape.rank < rank
                           else [tf.shape(log_scale)[0], -1])
  if likelihood == "bernoulli":
    return bernoulli_nll(targets, logits)
  if likelihood == "gaussian":
    return gaussian_nll(targets, logits, gaussian_stddev)
  if likelihood in LEARNED_SCALE:
    if log_scale is None:
      raise ValueError(f"{likelihood} needs the model's learned log-scale")
    nll = (discretized_logistic_nll if likelihood == "discretized_logistic"
           else gaussian_learned_nll)
    return nll(targets, logits, tf.cast(log_scale, tf.float32))
  raise ValueError(f"unknown reconstruction loss {likelihood!r}")


def discretized_logistic_log_prob(targets: tf.Tensor, mean: tf.Tensor,
                                  log_scale: tf.Tensor) -> tf.Tensor:
  """log P(level) per sub-pixel, for targets = level / 255 in [0, 1].

  Args:
    targets: float32, grey levels / 255 (what the pipeline yields).
    mean: float32 in [0, 1], the logistic's location.
    log_scale: float32, broadcastable; the scale on the [-1, 1] axis.
  """
  x = 2.0 * targets - 1.0
  centered = x - (2.0 * mean - 1.0)
  log_scale = tf.maximum(log_scale, MIN_LOG_SCALE)
  inv_scale = tf.exp(-log_scale)
  plus = inv_scale * (centered + _HALF_BIN)
  minus = inv_scale * (centered - _HALF_BIN)
  log_cdf_plus = plus - tf.nn.softplus(plus)        # log sigmoid(plus)
  log_one_minus_cdf_min = -tf.nn.softplus(minus)    # log (1 - sigmoid(minus))
  cdf_delta = tf.sigmoid(plus) - tf.sigmoid(minus)
  middle = inv_scale * centered
  # Where the bin's mass is too small for float32, its density times the
  # bin's width (2/255) stands in for it.
  log_pdf_mid = middle - log_scale - 2.0 * tf.nn.softplus(middle)
  inner = tf.where(cdf_delta > 1e-5,
                   tf.math.log(tf.maximum(cdf_delta, 1e-12)),
                   log_pdf_mid - math.log(127.5))
  return tf.where(x < -0.999, log_cdf_plus,
                  tf.where(x > 0.999, log_one_minus_cdf_min, inner))


def discretized_logistic_nll(targets, logits, log_scale) -> tf.Tensor:
  """-log P(x) under the discretized logistic, summed per example [B]."""
  return -_per_example(discretized_logistic_log_prob(
      targets, tf.sigmoid(logits), log_scale))


def gaussian_learned_nll(targets, logits, log_scale) -> tf.Tensor:
  """-log N(x | sigmoid(logits), exp(log_scale)^2), summed per example [B]."""
  log_scale = tf.maximum(log_scale, MIN_LOG_SCALE)
  per_sub_pixel = (0.5 * tf.square((targets - tf.sigmoid(logits))
                                   * tf.exp(-log_scale))
                   + log_scale + 0.5 * math.log(2.0 * math.pi))
  return _per_example(per_sub_pixel)
