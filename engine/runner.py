"""One training run, end to end: the engine's outer loop.

`run(config)` loads the data, builds the model under the strategy, restores
the latest checkpoint, then alternates compiled multi-step training calls with
the host-side work at step boundaries: progress and summaries every
`log_every` steps, checkpoints every `checkpoint_every`, test ELBO every
`eval_every`. At the end it saves, evaluates, draws the figures and exports.
Models are only called through `models.base.VariationalAutoencoder`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import sys
import threading
import time
from typing import Optional, TextIO

import keras
import tensorflow as tf

import models
from engine import checkpointing
from engine import distribute
from engine import export as export_lib
from engine import figures
from engine import likelihood
from engine import precision
from engine import profiling
from engine import progress
from engine import schedules
from engine import steps
from engine import summaries
from engine.config import RunConfig
from engine.data import pipeline
from engine.data import sources
from engine.errors import TrainingDiverged, UserError

CONFIG_JSON = checkpointing.CONFIG_JSON
CONFIG_FLAGFILE = "flags.txt"


class Preempted(Exception):
  """Raised after SIGTERM once a checkpoint has been saved; re-run to resume."""

  def __init__(self, step: int, checkpoint: str):
    super().__init__(f"preempted (SIGTERM) at step {step}: saved {checkpoint};"
                     " re-run the same command to resume")
    self.step = step
    self.checkpoint = checkpoint


class _PreemptionFlag:
  """Turns SIGTERM into a flag the loop checks between compiled calls."""

  def __init__(self):
    self.raised = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.raised = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass(frozen=True)
class RunResult:
  """What a run produced.

  Attributes:
    final_step: The global step training ended at.
    test_metrics: Test-set means: elbo, reconstruction, kl, loss (nats).
    checkpoint: Path of the last checkpoint.
    resumed_from: The checkpoint the run started from, if any.
    export_path: The SavedModel written, if any.
    figure_paths: The PNGs written.
    weights_fingerprint: A hash of the trained weights (equal hashes: the
      same weights, bit for bit).
  """

  final_step: int
  test_metrics: dict
  checkpoint: str
  resumed_from: Optional[str]
  export_path: Optional[str]
  figure_paths: list
  weights_fingerprint: str = ""


def prepare_model_dir(model_dir: str) -> None:
  """Creates `model_dir` and checks it is writable.

  Raises:
    UserError: Naming `--model_dir` if it cannot be created or written.
  """
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = os.path.join(model_dir, f".write-probe-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"--model_dir={model_dir}: not writable "
                    f"({e.strerror or e})") from None


def write_config(model_dir: str, config: RunConfig) -> None:
  """Writes the resolved config as JSON and as a flagfile (atomically)."""
  for name, text in ((CONFIG_JSON, config.to_json()),
                     (CONFIG_FLAGFILE, config.to_flagfile())):
    path = os.path.join(model_dir, name)
    with open(path + ".tmp", "w") as f:
      f.write(text)
    os.replace(path + ".tmp", path)


def total_steps(config: RunConfig, num_train_examples: int) -> int:
  """The step the run ends at: --train_steps, else epochs x steps per epoch."""
  if config.train.train_steps:
    return config.train.train_steps
  return config.train.epochs * pipeline.steps_per_epoch(
      num_train_examples, config.train.batch_size)


def _next_boundary(step: int, every: int, last: int) -> int:
  if every <= 0:
    return last
  return min((step // every + 1) * every, last)


class _Run:
  """The state of one run; `run()` below is its only user."""

  def __init__(self, config: RunConfig, stream: TextIO):
    self.config = config
    self.stream = stream
    train = config.train
    distribute.configure_devices(config.distribution)
    self.strategy = distribute.make_strategy(config.distribution)
    self.role = distribute.task_role(self.strategy)
    # Only the chief writes the run's files; other workers write what must
    # be written (checkpoints: saving is collective) to a scratch directory.
    self.write_dir = (train.model_dir if self.role.is_chief
                      else self.role.scratch_dir(train.model_dir))
    prepare_model_dir(self.write_dir)
    keras.utils.set_random_seed(train.seed)
    self.precision = precision.resolve(train.mixed_precision,
                                        train.allow_slow)
    self.policy = self.precision.policy
    self.data = sources.load(config.data)
    self.num_train_examples = len(self.data.train_images)
    replicas = self.strategy.num_replicas_in_sync
    if train.batch_size % replicas:
      raise UserError(f"--batch_size={train.batch_size}: must divide by the "
                      f"{replicas} replicas of "
                      f"--strategy={config.distribution.strategy}")
    if self.num_train_examples < train.batch_size:
      raise UserError(f"--batch_size={train.batch_size}: larger than the "
                      f"{self.num_train_examples} training examples")
    spec = models.get(config.model.name)
    steps_per_epoch = pipeline.steps_per_epoch(self.num_train_examples,
                                               train.batch_size)
    with self.strategy.scope(), precision.policy_scope(self.policy):
      try:
        self.vae = spec.create(
            self.data.image_shape, config.model.latent_dim,
            pixel_mean=pipeline.target_mean(self.data.train_images,
                                            config.data.binarize))
      except ValueError as e:
        raise UserError(f"--model={spec.name}: cannot take "
                        f"{self.data.source}'s images of shape "
                        f"{self.data.image_shape} ({e})") from None
      self.trainer = steps.Trainer(
          self.vae, config.model, self.strategy, train.batch_size,
          schedules.learning_rate(train.lr_schedule, train.learning_rate,
                                  steps_per_epoch),
          train.optimizer, loss_scaling=self.policy == "mixed_float16",
          jit_compile=train.jit_compile,
          # The paper's Adam settings come with its schedule.
          adam_epsilon=1e-4 if train.lr_schedule == "iwae" else 1e-7,
          nan_policy=train.nan_policy,
          max_skipped_steps=train.max_skipped_steps)
      # Evaluation reports the ELBO itself, whatever the training objective.
      self.evaluator = steps.Evaluator(
          self.vae, dataclasses.replace(config.model, objective="elbo",
                                        free_bits=0.0), self.strategy)
      self.nll_evaluator = None
      if train.eval_nll_samples:
        encode, log_likelihood = likelihood.model_functions(self.vae,
                                                            config.model)
        self.nll_evaluator = likelihood.ImportanceSampledEvaluator(
            encode, log_likelihood, self.strategy,
            self.data.image_shape, config.model.latent_dim,
            train.eval_nll_samples, train.batch_size, train.seed)
    fingerprint = checkpointing.architecture_fingerprint(
        spec.name, config.model.latent_dim, self.data.image_shape)
    self.checkpointer = checkpointing.Checkpointer(
        self.write_dir, self.trainer, fingerprint, train.keep_checkpoints,
        restore_from=train.model_dir, repair=self.role.is_chief)
    self.resumed_from = self.checkpointer.restore_latest()
    self.trainer.reapply_learning_rate()
    if self.role.is_chief:
      write_config(train.model_dir, config)
    self.total_steps = total_steps(config, self.num_train_examples)
    # Hold one copy of the training set: the tensor the pipeline gathers
    # from. tf.convert_to_tensor copies (and .numpy() would copy back), so
    # the loaded array is dropped once converted.
    self.train_images = pipeline.as_tensor(self.data.train_images)
    self.data = dataclasses.replace(self.data, train_images=None)
    self.options = pipeline.PipelineOptions(
        global_batch_size=train.batch_size, seed=train.seed,
        binarize=config.data.binarize, noise_factor=config.data.noise_factor,
        latent_dim=config.model.latent_dim,
        samples_per_example=config.model.iw_samples)
    eval_options = dataclasses.replace(self.options, samples_per_example=1)
    self.writer = summaries.SummaryWriter(self.write_dir)
    self.test_images = pipeline.as_tensor(self.data.test_images)
    self.test_labels = pipeline.as_tensor(self.data.test_labels)
    self.eval_data = self.strategy.distribute_datasets_from_function(
        lambda context: pipeline.eval_dataset(
            self.test_images, self.test_labels, eval_options, context))
    self._any_preempted = tf.function(self._count_preempted)

  def _count_preempted(self, flag):
    """How many replicas' processes got SIGTERM (a collective: all agree)."""
    per_replica = self.strategy.run(lambda: tf.identity(flag))
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                axis=None)

  def save(self, step: int) -> str:
    """Saves on every worker; returns the chief's checkpoint path.

    Raises:
      UserError: If the checkpoint cannot be written (disk full, directory
        gone or read-only); the previous checkpoint is untouched, since TF
        writes a new one beside it and the state file is replaced last.
    """
    previous = self.checkpointer.latest
    try:
      self.checkpointer.save(step)
    except (tf.errors.OpError, OSError) as e:
      reason = " ".join(str(getattr(e, "message", e)).split())[:200]
      kept = (f"the previous checkpoint, {previous}, is intact" if previous
              else "no earlier checkpoint exists")
      raise UserError(
          f"--model_dir={self.config.train.model_dir}: could not write "
          f"checkpoint ckpt-{step} ({type(e).__name__}: {reason}); {kept}. "
          "Free space or fix the directory, then re-run to resume") from None
    return os.path.join(self.config.train.model_dir, f"ckpt-{step}")

  def cleanup(self) -> None:
    if not self.role.is_chief:
      shutil.rmtree(self.write_dir, ignore_errors=True)
      try:
        os.rmdir(os.path.dirname(self.write_dir))  # The last one out.
      except OSError:
        pass

  def weights_fingerprint(self) -> str:
    """A hash of this process's copy of the weights, to compare workers."""
    digest = hashlib.sha256()
    for variable in self.vae.trainable_variables:
      digest.update(variable.numpy().tobytes())
    return digest.hexdigest()[:16]

  def say(self, message: str) -> None:
    print(message, file=self.stream, flush=True)

  def train(self, preemption: _PreemptionFlag) -> int:
    """Runs the training loop from the restored step to the last one.

    Raises:
      Preempted: After saving a checkpoint, if any worker got SIGTERM.
    """
    train = self.config.train
    start = int(self.trainer.global_step.numpy())
    if start >= self.total_steps:
      return start
    batches = self.trainer.training_batches(
        self.train_images, self.options, train.steps_per_loop, start,
        self.total_steps)
    bar = progress.ProgressBar(self.total_steps, self.stream)
    throughput = progress.Throughput()
    step, started = start, time.perf_counter()
    profiler = profiling.StepProfiler(train.profile_steps, self.write_dir,
                                      self.say)
    try:
      while step < self.total_steps:
        target = min(step + train.steps_per_loop,
                     _next_boundary(step, train.log_every, self.total_steps),
                     _next_boundary(step, train.checkpoint_every,
                                    self.total_steps),
                     _next_boundary(step, train.eval_every, self.total_steps),
                     profiler.next_edge(step, self.total_steps))
        profiler.before_loop(step)
        self.trainer.train_loop(batches, tf.constant(target - step, tf.int32))
        step = int(self.trainer.global_step.numpy())
        profiler.after_loop(step)
        if bool(self.trainer.non_finite.stopped.read_value()):
          raise TrainingDiverged(self._divergence_message())
        if int(self._any_preempted(tf.constant(int(preemption.raised)))):
          raise Preempted(step, self.save(step))
        if step % train.log_every == 0 or step == self.total_steps:
          metrics = self.trainer.metrics.result_and_reset()
          rate = throughput.measure(metrics.pop("examples"))
          steps_per_sec = (step - start) / max(time.perf_counter() - started,
                                               1e-9)
          bar.report(step, metrics, rate,
                     (self.total_steps - step) / max(steps_per_sec, 1e-9))
          skipped = int(self.trainer.non_finite.skipped_steps.read_value())
          if skipped:
            self.say(f"  {skipped} step(s) skipped so far: non-finite loss "
                     "(--nan_policy=skip)")
          self.writer.scalars("train", step, {**metrics,
                                              "examples_per_sec": rate,
                                              "skipped_steps": skipped})
        if train.checkpoint_every and step % train.checkpoint_every == 0:
          self.save(step)
        if (train.eval_every and step % train.eval_every == 0
            and step != self.total_steps):
          with throughput.paused():
            self.evaluate(step)
    finally:
      profiler.stop()
    return step

  def _divergence_message(self) -> str:
    state = self.trainer.non_finite
    names = {"reconstruction": "reconstruction term", "kl": "KL term",
             "gradients": "gradients"}
    terms = " and the ".join(names[t] for t in state.bad_terms()) or "loss"
    last = int(state.last_bad_step.read_value())
    checkpoint = self.checkpointer.latest
    kept = (f"the last good checkpoint, {checkpoint}, is kept and re-running "
            "resumes from it" if checkpoint else "no checkpoint was written "
            "before it")
    if self.config.train.nan_policy == "stop":
      return (f"training stopped at step {last + 1}: the {terms} became "
              f"non-finite (NaN or inf); that update was not applied, and "
              f"{kept}. Lower --learning_rate, or pass --nan_policy=skip")
    skipped = int(state.skipped_steps.read_value())
    return (f"training stopped at step {last + 1}: "
            f"{self.config.train.max_skipped_steps} steps in a row were "
            f"non-finite (the {terms} at the last one; {skipped} skipped in "
            f"all, since step {int(state.first_bad_step.read_value()) + 1}); "
            f"{kept}. Lower --learning_rate")

  def evaluate(self, step: int) -> dict:
    metrics = self.evaluator.evaluate(self.eval_data)
    examples = int(metrics.pop("examples"))
    if examples != len(self.data.test_images):
      raise RuntimeError(f"evaluated {examples} test examples, expected "
                         f"{len(self.data.test_images)}")
    self._image_summaries(step)
    self.say(f"eval step {step}: test ELBO {metrics['elbo']:.2f} nats "
             f"(reconstruction {metrics['reconstruction']:.2f}, "
             f"kl {metrics['kl']:.2f}) over {examples} test images")
    if self.nll_evaluator is not None:
      result = self.nll_evaluator.evaluate(self.eval_data)
      metrics.update(nll=result.nll, nll_stderr=result.nll_stderr,
                     bits_per_dim=result.bits_per_dim,
                     active_units=result.active_units)
      self.say(f"eval step {step}: test NLL {result.nll:.2f} "
               f"± {result.nll_stderr:.2f} nats "
               f"({result.bits_per_dim:.4f} bits/dim, "
               f"K={result.num_samples}), "
               f"{result.active_units}/{self.vae.latent_dim} active units")
    self.writer.scalars("eval", step, metrics)
    return metrics

  def _first_test_batch(self, size: int) -> dict:
    """Up to `size` test examples, in order, as numpy arrays (no padding)."""
    options = dataclasses.replace(self.options, global_batch_size=size,
                                  samples_per_example=1)
    return pipeline.real_examples(next(iter(pipeline.eval_dataset(
        self.test_images, self.test_labels, options))))

  def _image_summaries(self, step: int) -> None:
    inputs = tf.constant(self._first_test_batch(8)["inputs"])
    zeros = tf.zeros([len(inputs), self.vae.latent_dim])
    z_mean, _, _ = self.vae.encoder([inputs, zeros], training=False)
    reconstructed = tf.sigmoid(tf.cast(self.vae.decoder(z_mean), tf.float32))
    pairs = tf.concat([inputs, reconstructed], axis=0).numpy()
    self.writer.images("eval", step, "inputs_vs_reconstructions",
                       figures.tile(pairs, len(inputs)))
    prior = tf.random.stateless_normal([64, self.vae.latent_dim],
                                       seed=[self.config.train.seed, 7])
    samples = tf.sigmoid(tf.cast(self.vae.decoder(prior), tf.float32)).numpy()
    self.writer.images("eval", step, "prior_samples", figures.tile(samples, 8))

  def write_figures(self) -> list:
    test = self._first_test_batch(len(self.data.test_images))
    encode, decode = model_functions(self.vae)
    return figures.write_run_figures(
        encode, decode, self.vae.latent_dim, test["inputs"],
        test["targets"], test["labels"],
        summaries.read_metrics(self.config.train.model_dir),
        os.path.join(self.config.train.model_dir, "figures"),
        self.config.train.seed, denoising=self.config.data.noise_factor > 0)


def model_functions(vae) -> tuple:
  """(encode: images -> z_mean, decode: z -> probabilities) as numpy calls."""

  # Named functions, not lambdas: autograph finds a lambda by parsing its
  # source line, and two lambdas near each other can be confused.
  @tf.function
  def encode(images):
    zeros = tf.zeros([tf.shape(images)[0], vae.latent_dim])
    return vae.encoder([images, zeros], training=False)[0]

  @tf.function
  def decode(z):
    return tf.sigmoid(tf.cast(vae.decoder(z, training=False), tf.float32))

  return (lambda images: encode(tf.constant(images, tf.float32)).numpy(),
          lambda z: decode(tf.constant(z, tf.float32)).numpy())


def run(config: RunConfig, stream: TextIO | None = None) -> RunResult:
  """Trains, evaluates, draws and exports as `config` says.

  Args:
    config: The run's configuration.
    stream: Where progress goes (stdout by default).

  Returns:
    A `RunResult`.

  Raises:
    UserError: For bad flags, data or model directories.
  """
  state = _Run(config, stream or sys.stdout)
  try:
    return _train_evaluate_export(state, config)
  finally:
    state.cleanup()


def _train_evaluate_export(state: _Run, config: RunConfig) -> RunResult:
  if state.resumed_from:
    state.say(f"resumed from {state.resumed_from} at step "
              f"{int(state.trainer.global_step.numpy())}")
  state.say(f"training {config.model.name} (latent {config.model.latent_dim}) "
            f"on {state.data.source}: {state.num_train_examples} train / "
            f"{len(state.data.test_images)} test images, "
            f"{state.total_steps} steps of {config.train.batch_size}, "
            f"{state.strategy.num_replicas_in_sync} replica(s), "
            f"{state.precision.describe()}"
            f"{', XLA' if config.train.jit_compile else ''}"
            + ("" if state.role.task_type is None else
               f", task {state.role.task_type}:{state.role.task_id}"
               f"{' (chief)' if state.role.is_chief else ''}"))
  with _PreemptionFlag() as preemption:
    step = state.train(preemption)
  checkpoint = state.checkpointer.latest
  if checkpoint is None or not checkpoint.endswith(f"-{step}"):
    checkpoint = state.save(step)
  metrics = state.evaluate(step)
  state.writer.flush()
  figure_paths = []
  if config.train.figures and state.role.is_chief:
    figure_paths = state.write_figures()
  export_path = None
  if config.train.export_dir:
    export_dir = (config.train.export_dir if state.role.is_chief else
                  os.path.join(state.write_dir, "export"))
    export_path = export_lib.export(state.vae, export_dir, step,
                                    denoising=config.data.noise_factor > 0)
    state.say(f"exported SavedModel to {export_path}")
  fingerprint = state.weights_fingerprint()
  state.say(f"done: step {step}, test ELBO {metrics['elbo']:.2f} nats, "
            f"weights {fingerprint}")
  return RunResult(step, metrics, checkpoint, state.resumed_from, export_path,
                   figure_paths, fingerprint)
