"""The compiled training loop: many optimizer steps per call.

`Trainer.train(num_steps)` runs one `tf.function` of `num_steps` optimizer
steps (the count a tensor, so it never retraces) on the batches it was fed:
a tf.data iterator, or on one device a `step_batches.StepBatches` (the loop
builds each batch; with XLA one execution runs many steps). Loss terms are
summed on the device and returned as `loop_state.LoopOutputs`.

Every step asks the step guard (`step_guard`) whether to apply its update
(weights never take a NaN) and whether the loop must stop; the outputs say
what it saw. The trainer owns its state: `checkpoint_items()` is what a
checkpoint holds, and after a restore moves its step, the next call's
batches start there by themselves (`feed.Feed`).
"""

from __future__ import annotations

import time

import keras
import tensorflow as tf

from engine.data import pipeline
from engine.data import step_batches
from engine.devices import compilation
from engine.devices import replica_sums
from engine.objectives import elbo
from engine.train import conditional_update
from engine.train import feed as feed_lib
from engine.train import gradient_norms
from engine.train import weight_average
from engine.train import optimization
from engine.train import step_guard
from engine.train.loop_state import LoopOutputs
from engine.train.step_options import StepOptions
from models.base import VariationalAutoencoder

class Trainer:
  """Owns the global step, the training state and the compiled loop of one
  model.

  Create it inside `strategy.scope()`. Its public interface is `INTERFACE`
  (`tests/test_layers.py` holds every module outside `engine.train` to it).

  Args:
    vae: The model.
    objective: What each batch's loss is.
    optimizer: A Keras optimizer; a `LossScaleOptimizer` (float16) scales
      the loss, unscales gradients and skips non-finite steps itself.
    strategy: The tf.distribute strategy the loop runs under.
    global_batch_size: For averaging the loss over the global batch.
    options: How each step is taken: KL warm-up, XLA, the step guard's
      policy, gradient-norm clipping and skipping, the moving average (see
      `step_options.StepOptions`; default: a plain step).

  Attributes:
    average: The weights' moving average (None: none), for evaluations.
    jit_compile: Whether the steps are compiled with XLA.
    xla_reason: Why, where `jit_compile` was chosen by default.
    loops_on_device: Whether the loop builds its own batches
      (`training_batches` returns a `step_batches.StepBatches`).
  """

  # What modules outside engine.train may use (tests/test_layers.py).
  INTERFACE = frozenset({
      "train", "step", "feed", "training_batches", "train_loop",
      "compute_gradients", "checkpoint_items", "set_learning_rate",
      "learning_rate_now", "average", "jit_compile", "xla_reason",
      "loops_on_device"})

  def __init__(self, vae: VariationalAutoencoder, objective: elbo.Objective,
               optimizer: keras.optimizers.Optimizer,
               strategy: tf.distribute.Strategy, global_batch_size: int,
               options: StepOptions = StepOptions()):
    self._guard = step_guard.StepGuard(options.nan_policy,
                                       options.max_skipped_steps)
    self.vae = vae
    self.objective = objective
    self.kl_warmup_steps = options.kl_warmup_steps
    self.strategy = strategy
    self.global_batch_size = global_batch_size
    self.optimizer = optimizer
    self.loss_scaling = isinstance(optimizer,
                                   keras.optimizers.LossScaleOptimizer)
    # What checkpoints hold: the plain optimizer restores across policies.
    self._base_optimizer = (optimizer.inner_optimizer if self.loss_scaling
                           else optimizer)
    # Optimizer slots must exist before a checkpoint is restored into them.
    self.optimizer.build(vae.trainable_variables)
    self.global_step = tf.Variable(
        0, dtype=tf.int64, trainable=False, name="global_step",
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self.metrics = replica_sums.LossSums(elbo.TERMS)
    self.average = (weight_average.WeightAverage(
        vae.trainable_variables, options.ema_decay, options.ema_dynamic_decay)
                    if options.ema_decay else None)
    self._norms = gradient_norms.GradientNorms(
        options.clip_grad_norm, options.skip_grad_norm,
        distributed=tf.distribute.has_strategy())
    jit_compile, self.xla_reason = options.jit_compile, ""
    if jit_compile is None:
      jit_compile, self.xla_reason = compilation.xla_by_default(vae)
    self.jit_compile = jit_compile
    # Without distribution, XLA compiles the whole step, optimizer update
    # included (fusing Adam's elementwise updates is most of its gain for
    # small models). Under tf.distribute the update is a cross-replica
    # operation XLA cannot hold, so only forward and backward are compiled.
    one_device = not tf.distribute.has_strategy()
    self.whole_step_xla = jit_compile and one_device
    self.gradients = (tf.function(self.compute_gradients, jit_compile=True)
                      if jit_compile and not self.whole_step_xla
                      else self.compute_gradients)
    self._replica_step = (tf.function(self._step, jit_compile=True)
                          if self.whole_step_xla else self._step)
    # On one device the loop builds its own batches from a StepBatches (see
    # `_train_loop_on_device`), and with XLA runs many steps per XLA call;
    # except where XLA:CPU compiles convolution gradients inside a loop into
    # a naive loop nest, which keeps one XLA step per call, fed by tf.data.
    self.loops_on_device = one_device and not (
        jit_compile and not tf.config.list_logical_devices("GPU")
        and vae.has_convolutions)
    self._device_steps = (
        tf.function(self._steps_on_device, jit_compile=self.whole_step_xla)
        if self.loops_on_device else None)
    self.train_loop = tf.function(self._train_loop)
    self._feed = None

  def checkpoint_items(self) -> dict:
    """What a checkpoint of this trainer holds, by the names
    `checkpoints.Checkpointer` takes: the model's two parts, the plain
    optimizer (so checkpoints restore across precision policies), the step,
    a float16 loss scale's state and the moving average."""
    loss_scale = ({"step_counter": self.optimizer.step_counter,
                   "dynamic_scale": self.optimizer.dynamic_scale}
                  if self.loss_scaling else {})
    return dict(encoder=self.vae.encoder, decoder=self.vae.decoder,
                optimizer=self._base_optimizer, global_step=self.global_step,
                loss_scale=loss_scale, averages=self.average)

  def set_learning_rate(self, learning_rate) -> None:
    """Sets a constant rate again after a restore (which brought back the
    checkpoint's); a schedule, a function of the step, needs nothing."""
    optimization.reapply_learning_rate(self._base_optimizer, learning_rate)

  def kl_weight(self):
    """beta, ramped up linearly over `kl_warmup_steps` when warming up."""
    warmup = self.kl_warmup_steps
    if warmup <= 0:
      return self.objective.beta
    # Step s (0-based) trains with weight (s + 1) / warmup, reaching beta at
    # the last warm-up step.
    progress = tf.cast(self.global_step + 1, tf.float32) / float(warmup)
    return self.objective.beta * tf.minimum(progress, 1.0)

  def compute_gradients(self, batch):
    """(gradients of the scaled mean loss, per-example terms) for a batch."""
    variables = self.vae.trainable_variables
    with tf.GradientTape() as tape:
      terms = elbo.per_example_terms(self.vae, self.objective, batch,
                                     training=True,
                                     kl_weight=self.kl_weight())
      loss = tf.nn.compute_average_loss(
          terms["loss"], global_batch_size=self.global_batch_size)
      if self.loss_scaling:
        loss = self.optimizer.scale_loss(loss)
    return tape.gradient(loss, variables), terms

  def _step(self, batch):
    gradients, terms = self.gradients(batch)
    # With float16 loss scaling, overflowing gradients are routine: the
    # LossScaleOptimizer skips those steps and lowers the scale itself.
    flags = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, self._guard.non_finite_flags(
            terms, None if self.loss_scaling else gradients))
    gradients, norm, too_large = self._norms.process(
        gradients, self.optimizer.dynamic_scale if self.loss_scaling
        else None)
    applied, stop = self._guard.record(flags, too_large, norm,
                                       self.global_step)
    conditional_update.apply_if(self.optimizer, self.vae.trainable_variables,
                                applied, gradients, gated=self.whole_step_xla)
    if self.average is not None:
      self.average.update(applied, self.global_step)
    self.metrics.add(terms, keep=applied)
    self._norms.add(norm, tf.equal(tf.reduce_sum(flags), 0.0))
    return stop

  def feed(self, images: tf.Tensor, options: pipeline.PipelineOptions,
           steps_per_loop: int, last_step: int,
           labels: tf.Tensor | None = None) -> None:
    """The training data `train` reads, from the current step on (the
    batches are made at the first call, after any restore)."""
    self._feed = feed_lib.Feed(
        lambda start: self.training_batches(images, options, steps_per_loop,
                                            start, last_step, labels))

  def learning_rate_now(self) -> float:
    """The learning rate the next step takes."""
    rate = self._base_optimizer.learning_rate
    rate = getattr(rate, "value", rate)  # A Keras variable wraps a tf one.
    return float(tf.convert_to_tensor(rate))

  @property
  def step(self) -> int:
    return int(self.global_step.numpy())

  def train(self, num_steps: int, batches=None) -> LoopOutputs:
    """Runs `num_steps` steps in one compiled call and returns its outputs.

    Args:
      num_steps: Steps to run (fewer if the step guard stops the loop).
      batches: What `training_batches` returns (default: `feed`'s).
    """
    first = self.step
    fed = batches is None
    if fed:
      batches = self._feed.batches(first)
    started = time.perf_counter()
    self.train_loop(batches, tf.constant(num_steps, tf.int32))
    step = self.step  # Waits for the call to finish.
    seconds = time.perf_counter() - started
    if fed:
      self._feed.ended_at(step)
    sums, examples = self.metrics.sums_and_reset()
    return LoopOutputs(
        step=step, steps=step - first, sums=sums, examples=examples,
        seconds=seconds, guard=self._guard.report(),
        grad_norm=self._norms.mean_and_reset())

  def training_batches(self, images: tf.Tensor,
                       options: pipeline.PipelineOptions, steps_per_loop: int,
                       start_step: int, end_step: int,
                       labels: tf.Tensor | None = None):
    """What `train_loop` is fed for global steps [start_step, end_step)
    (see `feed.training_batches`)."""
    return feed_lib.training_batches(
        self.strategy, self.loops_on_device, images, options, steps_per_loop,
        start_step, end_step, labels)

  def _train_loop(self, batches, num_steps):
    """Runs `num_steps` (an int32 tensor) steps on `batches` (what
    `training_batches` returns); fewer if the step guard stops the loop."""
    if isinstance(batches, step_batches.StepBatches):
      self._train_loop_on_device(batches, num_steps)
      return
    for _ in tf.range(num_steps):
      stop = self.strategy.run(self._replica_step, args=(next(batches),))
      self.global_step.assign_add(1)
      # Every replica computed the same value: no collective needed.
      if self.strategy.experimental_local_results(stop)[0]:
        break

  def _train_loop_on_device(self, batches, num_steps):
    """Runs steps on batches the loop builds, `steps_per_call` at a time.

    No tf.data iterator feeds the steps, and with XLA one execution runs
    them all: nothing returns to the host executor between steps (no kernel
    launch, no argument marshalling).
    """
    if not self.loops_on_device:
      raise ValueError("StepBatches need one device (and with XLA on a CPU, "
                       "a model without convolutions)")
    remaining = num_steps
    while remaining > 0:
      draws = batches.draw(self.global_step)
      count = tf.minimum(remaining, batches.steps_per_call)
      # The draws always cover steps_per_call steps: one shape, so XLA
      # compiles once.
      self._device_steps(batches, draws, count)
      remaining -= count
      if self._guard.stopped():
        break

  def _steps_on_device(self, batches, draws, num_steps):
    # A `while`, not `for ... in tf.range(num_steps)`: autograph gives the
    # latter `maximum_iterations=num_steps`, which XLA needs as a
    # compile-time constant, so every new step count would recompile.
    index = tf.constant(0, num_steps.dtype)
    while index < num_steps:
      batch = batches.batch(tf.nest.map_structure(lambda d: d[index], draws))
      stop = self._step(batch)
      self.global_step.assign_add(1)
      index += 1
      if stop:
        break
