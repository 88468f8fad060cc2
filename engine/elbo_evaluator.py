"""The test-set ELBO (beta 1), over every example of a distributed dataset."""

from __future__ import annotations

import tensorflow as tf

from engine import elbo
from engine import loop_state
from engine.config import ModelConfig
from models.base import VariationalAutoencoder


class Evaluator:
  """Computes the test-set ELBO (beta 1) over a whole distributed dataset.

  Args:
    vae: The model.
    model_config: Likelihood (beta is ignored: the ELBO is reported).
    strategy: The tf.distribute strategy.
  """

  def __init__(self, vae: VariationalAutoencoder, model_config: ModelConfig,
               strategy: tf.distribute.Strategy):
    self.vae = vae
    self.model_config = model_config
    self.strategy = strategy
    self.metrics = loop_state.LossSums(loop_state.METRIC_NAMES)
    self._evaluate = tf.function(self._evaluate_dataset)

  def _step(self, batch):
    terms = elbo.per_example_terms(self.vae, self.model_config, batch,
                                   training=False)
    self.metrics.add(terms, weights=batch["weights"])

  def _evaluate_dataset(self, dataset):
    for batch in dataset:
      self.strategy.run(self._step, args=(batch,))

  def evaluate(self, dataset) -> dict[str, float]:
    """Mean per-example terms over every example of `dataset`.

    Returns:
      Dict with loss, reconstruction, kl, elbo (nats per example) and
      examples (how many were evaluated).
    """
    self._evaluate(dataset)
    return self.metrics.result_and_reset()
