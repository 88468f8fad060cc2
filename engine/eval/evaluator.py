"""The test-set ELBO and what each latent unit carries, in one distributed
pass over a padded, weighted eval dataset (`pipeline.eval_dataset`).

For each example x (with label y, for a conditional model):

    ELBO(x) = log p(x | z) - KL(q(z | x) || N(0, I)),  z = mean + std * eps

with the analytic KL and the batch's own reparameterization noise (beta 1:
evaluation reports the ELBO whatever the training objective). Alongside it,
per latent unit: the mean KL, and the variance across the data of the
posterior mean, Burda et al.'s A_u = Cov_x(E_q[u | x]); a unit is active
when that variance exceeds `ACTIVE_UNIT_THRESHOLD`.

The model enters as two functions (`model_functions`, or an export's), so a
checkpoint and a SavedModel are evaluated by the same code.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from engine.devices import replica_sums
from engine.objectives import elbo

ACTIVE_UNIT_THRESHOLD = 1e-2

# images -> (z_mean, z_log_var); conditional: (images, labels) -> ...
Encode = Callable[..., tuple]
# (targets [N, ...], z [N, D]) -> log p(targets | z) [N]; conditional:
# (targets, z, labels [N]) -> log p(targets | z, labels).
LogLikelihood = Callable[..., tf.Tensor]


# (inputs, targets, epsilon [B, K, D] (, labels)) -> (reconstruction NLL
# [B, K], KL per unit [B, K, D]) from sampled log-densities
# (`elbo.sampled_terms`), for models with no analytic KL.
SampledTerms = Callable[..., tuple]


def model_sampled_terms(vae, objective: elbo.Objective
                        ) -> Optional[SampledTerms]:
  """The sampled terms of a hierarchical model; None for one Gaussian
  group, whose KL is analytic."""
  if not vae.hierarchical:
    return None
  return lambda inputs, targets, epsilon, labels=None: elbo.sampled_terms(
      vae, objective, inputs, targets, epsilon, labels)


def model_functions(vae, objective: elbo.Objective
                    ) -> tuple[Encode, LogLikelihood]:
  """(encode, log_likelihood) of an in-memory `VariationalAutoencoder`."""
  return vae.posterior, elbo.decoder_log_likelihood(vae, objective)


def export_functions(exported, objective: elbo.Objective
                     ) -> tuple[Encode, LogLikelihood]:
  """(encode, log_likelihood) of a loaded export
  (`engine.serving.loaded.Exported`) with the likelihood it was trained
  with."""

  def encode(images, labels=None):
    outputs = exported.encode(images, labels)
    return outputs["z_mean"], outputs["z_log_var"]

  def log_likelihood(targets, z, labels=None):
    decoded = exported.decode(z, labels)
    return -objective.reconstruction_nll(targets, decoded["logits"],
                                         decoded.get("log_scale"))

  return encode, log_likelihood


class Evaluator:
  """The test ELBO and per-unit statistics of a model given as functions.

  Create it inside `strategy.scope()`.

  Args:
    encode: `images (, labels) -> (z_mean, z_log_var)`, float32 [B, D].
    log_likelihood: `(targets, z (, labels)) -> log p(x | z)` [B].
    strategy: The tf.distribute strategy the evaluation runs under.
    latent_dim: D.
    conditional: `encode` and `log_likelihood` take the batch's labels.
    sampled: The model's `SampledTerms`, for one with no analytic KL: the
      reconstruction and the KL per unit come from them, and `encode` gives
      only the posterior means (`model_sampled_terms`).
    latent_groups: The groups' sizes of a hierarchical model: their active
      units and KL are reported apart too (`active_units_z1`, `kl_z1`, ...).
  """

  def __init__(self, encode: Encode, log_likelihood: LogLikelihood,
               strategy: tf.distribute.Strategy, latent_dim: int,
               conditional: bool = False,
               sampled: Optional[SampledTerms] = None,
               latent_groups: tuple = ()):
    self._encode = encode
    self._sampled = sampled
    self._groups = tuple(latent_groups)
    self._log_likelihood = log_likelihood
    self._strategy = strategy
    self._conditional = conditional
    self._sums = replica_sums.ReplicaSums(
        {"count": [], "reconstruction": [], "kl": [], "elbo": [],
         "elbo_sq": [], "kl_per_unit": [latent_dim], "mean": [latent_dim],
         "mean_sq": [latent_dim]}, tf.float64, "eval")
    self._evaluate = tf.function(self._evaluate_dataset)

  def terms(self, batch) -> dict:
    """Per example of a batch: `elbo`, `reconstruction`, `kl` [B], and
    `z_mean`, `kl_per_unit` [B, D]."""
    condition = (batch["labels"],) if self._conditional else ()
    z_mean, z_log_var = self._encode(batch["inputs"], *condition)
    z_mean = tf.cast(z_mean, tf.float32)
    z_log_var = tf.cast(z_log_var, tf.float32)
    epsilon = tf.cast(batch["epsilon"], tf.float32)
    if self._sampled is not None:
      reconstruction, kl_per_unit = self._sampled(
          batch["inputs"], batch["targets"], epsilon[:, tf.newaxis],
          *condition)
      reconstruction, kl_per_unit = reconstruction[:, 0], kl_per_unit[:, 0]
    else:
      z = z_mean + tf.exp(0.5 * z_log_var) * epsilon
      reconstruction = -self._log_likelihood(batch["targets"], z, *condition)
      kl_per_unit = elbo.gaussian_kl_per_unit(z_mean, z_log_var)
    kl = tf.reduce_sum(kl_per_unit, axis=1)
    return {"elbo": -(reconstruction + kl), "reconstruction": reconstruction,
            "kl": kl, "z_mean": z_mean, "kl_per_unit": kl_per_unit}

  def _step(self, batch):
    terms = self.terms(batch)
    reconstruction, kl, value = (terms[name] for name in
                                 ("reconstruction", "kl", "elbo"))
    z_mean, kl_per_unit = terms["z_mean"], terms["kl_per_unit"]
    weights = batch["weights"]

    def weighted(values):
      return replica_sums.weighted_sum(values, weights)

    self._sums.add(count=tf.reduce_sum(tf.cast(weights, tf.float64)),
                   reconstruction=weighted(reconstruction), kl=weighted(kl),
                   elbo=weighted(value), elbo_sq=weighted(tf.square(
                       tf.cast(value, tf.float64))),
                   kl_per_unit=weighted(kl_per_unit), mean=weighted(z_mean),
                   mean_sq=weighted(tf.square(tf.cast(z_mean, tf.float64))))

  def _evaluate_dataset(self, dataset):
    for batch in dataset:
      self._strategy.run(self._step, args=(batch,))

  def evaluate(self, dataset) -> dict:
    """Means over every (real) example of `dataset`.

    Returns:
      `elbo`, `reconstruction`, `kl`, `loss` (-ELBO), `elbo_stderr` (nats
      per example), `examples`, `active_units`, and the arrays
      `kl_per_unit` and `unit_variances` [D].
    """
    self._evaluate(dataset)
    sums = self._sums.read_and_reset()
    count = float(sums["count"])
    mean = {name: float(sums[name]) / max(count, 1.0)
            for name in ("reconstruction", "kl", "elbo")}
    spread = max(float(sums["elbo_sq"]) / max(count, 1.0)
                 - mean["elbo"] ** 2, 0.0)
    unit_mean = sums["mean"] / max(count, 1.0)
    unit_variances = np.maximum(sums["mean_sq"] / max(count, 1.0)
                                - unit_mean ** 2, 0.0)
    active = unit_variances > ACTIVE_UNIT_THRESHOLD
    per_group, start = {}, 0
    for index, size in enumerate(self._groups if len(self._groups) > 1
                                 else (), start=1):
      per_group[f"active_units_z{index}"] = int(np.sum(
          active[start:start + size]))
      per_group[f"kl_z{index}"] = float(np.sum(
          sums["kl_per_unit"][start:start + size]) / max(count, 1.0))
      start += size
    return {
        **mean, **per_group, "loss": -mean["elbo"],
        "elbo_stderr": (math.sqrt(spread / (count - 1)) if count > 1
                        else 0.0),
        "examples": int(count),
        "kl_per_unit": sums["kl_per_unit"] / max(count, 1.0),
        "unit_variances": unit_variances,
        "active_units": int(np.sum(unit_variances > ACTIVE_UNIT_THRESHOLD)),
    }
