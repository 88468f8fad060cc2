"""The compiled parts of the loop: many training steps per call, and evaluation.

`Trainer.train_loop(iterator, num_steps)` is one `tf.function` that runs
`num_steps` optimizer steps (`for _ in tf.range(num_steps)`, the count a
tensor so changing it never retraces). Loss terms are accumulated on-device in
ON_READ variables, so a step never waits for the host; the controller reads
and resets them when it logs.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from engine import elbo
from engine.config import ModelConfig
from models.base import VariationalAutoencoder

METRIC_NAMES = ("loss", "reconstruction", "kl", "elbo")


class _Accumulator:
  """Per-replica running sums of loss terms, summed across replicas on read."""

  def __init__(self, names):
    self.sums = {
        name: tf.Variable(0.0, trainable=False, name=f"sum_{name}",
                          synchronization=tf.VariableSynchronization.ON_READ,
                          aggregation=tf.VariableAggregation.SUM)
        for name in names}
    self.count = tf.Variable(0.0, trainable=False, name="count",
                             synchronization=tf.VariableSynchronization.ON_READ,
                             aggregation=tf.VariableAggregation.SUM)

  def add(self, per_example: dict[str, tf.Tensor]) -> None:
    for name, total in self.sums.items():
      total.assign_add(tf.reduce_sum(per_example[name]))
    some_term = next(iter(per_example.values()))
    self.count.assign_add(tf.cast(tf.shape(some_term)[0], tf.float32))

  def result_and_reset(self) -> dict[str, float]:
    """Means per example since the last reset, then zeroes the sums."""
    count = float(self.count.read_value())
    means = {name: float(total.read_value()) / max(count, 1.0)
             for name, total in self.sums.items()}
    means["examples"] = count
    for variable in list(self.sums.values()) + [self.count]:
      variable.assign(0.0)
    return means


class Trainer:
  """Owns the optimizer, the global step and the compiled training loop.

  Create it inside `strategy.scope()`.

  Args:
    vae: The model.
    model_config: Likelihood and beta.
    strategy: The tf.distribute strategy the loop runs under.
    global_batch_size: For averaging the loss over the global batch.
    learning_rate: The optimizer's learning rate, a float or a Keras schedule.
    optimizer: `adam` or `sgd`.
    loss_scaling: Wrap the optimizer in a dynamic `LossScaleOptimizer`
      (float16: scales the loss, unscales gradients, skips non-finite steps).
    jit_compile: Compile the forward and backward pass with XLA. The
      optimizer update stays outside: under tf.distribute it is a cross-replica
      operation XLA cannot hold.
    adam_epsilon: Adam's epsilon (Keras's default 1e-7; the IWAE paper's
      1e-4).
  """

  def __init__(self, vae: VariationalAutoencoder, model_config: ModelConfig,
               strategy: tf.distribute.Strategy, global_batch_size: int,
               learning_rate, optimizer: str = "adam",
               loss_scaling: bool = False, jit_compile: bool = False,
               adam_epsilon: float = 1e-7):
    self.vae = vae
    self.model_config = model_config
    self.strategy = strategy
    self.global_batch_size = global_batch_size
    if optimizer == "adam":
      self.base_optimizer = keras.optimizers.Adam(learning_rate,
                                                  epsilon=adam_epsilon)
    elif optimizer == "sgd":
      self.base_optimizer = keras.optimizers.SGD(learning_rate)
    else:
      raise ValueError(f"unknown optimizer {optimizer!r}")
    self.optimizer = (keras.optimizers.LossScaleOptimizer(self.base_optimizer)
                      if loss_scaling else self.base_optimizer)
    # Optimizer slots must exist before a checkpoint is restored into them.
    self.optimizer.build(vae.trainable_variables)
    self.global_step = tf.Variable(
        0, dtype=tf.int64, trainable=False, name="global_step",
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.metrics = _Accumulator(METRIC_NAMES)
    self.loss_scaling = loss_scaling
    self.gradients = tf.function(self._gradients, jit_compile=True) if (
        jit_compile) else self._gradients
    self.train_loop = tf.function(self._train_loop)

  @property
  def loss_scale_variables(self) -> dict:
    """The dynamic loss scale's state (empty without loss scaling)."""
    if not self.loss_scaling:
      return {}
    return {"step_counter": self.optimizer.step_counter,
            "dynamic_scale": self.optimizer.dynamic_scale}

  def kl_weight(self):
    """beta, ramped up linearly over `kl_warmup_steps` when warming up."""
    warmup = self.model_config.kl_warmup_steps
    if warmup <= 0:
      return self.model_config.beta
    # Step s (0-based) trains with weight (s + 1) / warmup, reaching beta at
    # the last warm-up step.
    progress = tf.cast(self.global_step + 1, tf.float32) / float(warmup)
    return self.model_config.beta * tf.minimum(progress, 1.0)

  def _gradients(self, batch):
    """(gradients of the scaled mean loss, per-example terms) for a batch."""
    variables = self.vae.trainable_variables
    with tf.GradientTape() as tape:
      terms = elbo.per_example_terms(self.vae, self.model_config, batch,
                                     training=True,
                                     kl_weight=self.kl_weight())
      loss = tf.nn.compute_average_loss(
          terms["loss"], global_batch_size=self.global_batch_size)
      if self.loss_scaling:
        loss = self.optimizer.scale_loss(loss)
    return tape.gradient(loss, variables), terms

  def _step(self, batch):
    gradients, terms = self.gradients(batch)
    # A LossScaleOptimizer unscales, and skips the update if not finite.
    self.optimizer.apply_gradients(zip(gradients,
                                       self.vae.trainable_variables))
    self.metrics.add(terms)

  def _train_loop(self, iterator, num_steps):
    for _ in tf.range(num_steps):
      self.strategy.run(self._step, args=(next(iterator),))
      self.global_step.assign_add(1)


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
    self.metrics = _Accumulator(METRIC_NAMES)
    self._evaluate = tf.function(self._evaluate_dataset)

  def _step(self, batch):
    terms = elbo.per_example_terms(self.vae, self.model_config, batch,
                                   training=False)
    self.metrics.add(terms)

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
