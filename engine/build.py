"""One build step: a `RunConfig` becomes the parts of a run.

`build(config)` lays out devices, makes the strategy and this process's role,
loads the data, builds the model, trainer, evaluators, checkpointer and
summary writer, and restores the latest checkpoint. The engine (`runner`)
and the tools get their parts here, or from the smaller helpers below, so
that no caller wires them by hand and a setting means the same everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

import models
from engine import checkpointing
from engine import distribute
from engine import elbo_evaluator
from engine import export
from engine import files
from engine import likelihood
from engine import precision
from engine import preflight
from engine import schedules
from engine import steps
from engine import summaries
from engine import config as config_lib
from engine.config import ModelConfig, RunConfig
from engine.data import pipeline
from engine.data import sources
from engine.errors import UserError, quoted
from models.base import VariationalAutoencoder

CONFIG_JSON = checkpointing.CONFIG_JSON
CONFIG_FLAGFILE = "flags.txt"


@dataclasses.dataclass
class RunParts:
  """Everything a run is made of (see `build`).

  Attributes:
    config: The run's configuration.
    strategy: The tf.distribute strategy.
    role: This process's place in the cluster.
    write_dir: Where this process writes (the model dir on the chief).
    precision: The resolved policy, and why `auto` chose it.
    data: The dataset (its training images moved into `train_images`).
    vae: The model.
    trainer: The compiled training loop, optimizer and step.
    evaluator: The test-set ELBO.
    nll_evaluator: The importance-weighted test NLL (None: not asked for).
    checkpointer: Saves and restores the trainer's state.
    writer: TensorBoard and metrics.jsonl.
    options: How the pipeline makes training batches.
    train_images, train_labels, test_images, test_labels: The data as
      tensors (the one copy of each the run holds).
    eval_data: The distributed test set, in padded, weighted batches.
    total_steps: The step training ends at.
    resumed_from: The checkpoint restored, if any.
  """

  config: RunConfig
  strategy: tf.distribute.Strategy
  role: distribute.TaskRole
  write_dir: str
  precision: precision.Choice
  data: sources.ImageDataset
  vae: VariationalAutoencoder
  trainer: steps.Trainer
  evaluator: elbo_evaluator.Evaluator
  nll_evaluator: Optional[likelihood.ImportanceSampledEvaluator]
  checkpointer: checkpointing.Checkpointer
  writer: summaries.SummaryWriter
  options: pipeline.PipelineOptions
  train_images: tf.Tensor
  train_labels: tf.Tensor
  test_images: tf.Tensor
  test_labels: tf.Tensor
  eval_data: tf.distribute.DistributedDataset
  total_steps: int
  resumed_from: Optional[str]

  @property
  def num_train_examples(self) -> int:
    return int(self.train_images.shape[0])

  @property
  def num_test_examples(self) -> int:
    return int(self.test_images.shape[0])


def write_config(model_dir: str, config: RunConfig) -> None:
  """Writes the resolved config as JSON and as a flagfile (atomically)."""
  for name, text in ((CONFIG_JSON, config.to_json()),
                     (CONFIG_FLAGFILE, config.to_flagfile())):
    files.write_atomically(files.join(model_dir, name), text)


def total_steps(config: RunConfig, num_train_examples: int) -> int:
  """The step the run ends at: --train_steps, else epochs x steps per epoch."""
  if config.train.train_steps:
    return config.train.train_steps
  return config.train.epochs * pipeline.steps_per_epoch(
      num_train_examples, config.train.batch_size)


def pipeline_options(config: RunConfig, latent_dim: Optional[int] = None,
                     batch_size: Optional[int] = None,
                     samples_per_example: Optional[int] = None
                     ) -> pipeline.PipelineOptions:
  """The pipeline's options for a run's config (evaluation: one sample)."""
  return pipeline.PipelineOptions(
      global_batch_size=batch_size or config.train.batch_size,
      seed=config.train.seed, binarize=config.data.binarize,
      noise_factor=config.data.noise_factor,
      latent_dim=latent_dim or config.model.latent_dim,
      samples_per_example=(samples_per_example if samples_per_example
                           else config.model.iw_samples))


def check_batch_fits(batch_size: int, strategy: tf.distribute.Strategy,
                     strategy_name: str) -> None:
  """Raises a UserError unless the global batch divides into the replicas."""
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise UserError(f"--batch_size={batch_size}: must divide by the "
                    f"{replicas} replicas of --strategy={strategy_name}")


def eval_data(strategy: tf.distribute.Strategy, images: tf.Tensor,
              labels: tf.Tensor, options: pipeline.PipelineOptions):
  """The test set as the strategy's distributed, padded, weighted batches."""
  return strategy.distribute_datasets_from_function(
      lambda context: pipeline.eval_dataset(images, labels, options, context))


def evaluation_model_config(model_config: ModelConfig) -> ModelConfig:
  """Evaluation reports the ELBO itself, whatever the training objective."""
  return dataclasses.replace(model_config, objective="elbo", free_bits=0.0)


def make_trainer(vae: VariationalAutoencoder, config: RunConfig,
                 strategy: tf.distribute.Strategy, policy: str,
                 steps_per_epoch: int) -> steps.Trainer:
  """The run's trainer (create it inside `strategy.scope()`)."""
  train = config.train
  return steps.Trainer(
      vae, config.model, strategy, train.batch_size,
      schedules.learning_rate(train.lr_schedule, train.learning_rate,
                              steps_per_epoch),
      train.optimizer, loss_scaling=policy == "mixed_float16",
      jit_compile=train.jit_compile,
      adam_epsilon=schedules.adam_epsilon(train.lr_schedule),
      nan_policy=train.nan_policy,
      max_skipped_steps=train.max_skipped_steps)


def num_classes(config: RunConfig, data: sources.ImageDataset) -> int:
  """K for a `--conditional` run (0 otherwise): the labels are 0..K-1.

  Raises:
    UserError: Naming `--conditional` and the data, if some images have no
      label (-1) or there are fewer than two classes.
  """
  if not config.model.conditional:
    return 0
  flag = f"--{config_lib.flag_name('conditional')}"
  for split in ("train", "test"):
    labels = getattr(data, f"{split}_labels")
    unlabelled = int(np.sum(labels < 0))
    if unlabelled:
      raise UserError(f"{flag}: {quoted(data.source)} has {unlabelled} {split} "
                      "images without a label; a conditional model needs a "
                      "label for every image (class sub-folders, IDX label "
                      "files or a labelled dataset)")
  classes = int(data.train_labels.max()) + 1
  if classes < 2:
    raise UserError(f"{flag}: {quoted(data.source)} has only one class; a "
                    "conditional model needs at least two")
  missing = np.setdiff1d(np.arange(classes), data.train_labels)
  if missing.size:
    shown = ", ".join(str(c) for c in missing[:5]) + (
        ", ..." if missing.size > 5 else "")
    raise UserError(f"{flag}: {quoted(data.source)} has training labels up "
                    f"to {classes - 1} but no training image of class "
                    f"{shown} ({missing.size} of {classes}); a conditional "
                    "model's labels are 0..K-1 with every class present")
  unseen = int(np.sum(data.test_labels >= classes))
  if unseen:
    raise UserError(f"{flag}: {quoted(data.source)} has {unseen} test images "
                    f"of classes above {classes - 1}, which no training "
                    "image has")
  return classes


def check_test_labels(num_classes: int, labels: np.ndarray,
                      source: str) -> None:
  """For a tool that evaluates a trained model on (possibly other) data:
  raises a UserError unless a conditional model (`num_classes` > 0) gets one
  of its classes for every test image.
  """
  outside = int(np.sum((labels < 0) | (labels >= num_classes)))
  if num_classes and outside:
    raise UserError(f"the model is conditional on {num_classes} classes but "
                    f"{outside} test images of {source} have no label in "
                    f"0..{num_classes - 1}")


def model_and_trainer(config: RunConfig, image_shape: tuple,
                      num_train_examples: int,
                      strategy: Optional[tf.distribute.Strategy] = None):
  """A model and its trainer for `config` outside a full run (benchmarks,
  throughput, device checks): the same construction `build` uses.

  Returns:
    (vae, trainer).

  Raises:
    UserError: For `--conditional`, which these tools do not measure.
  """
  if config.model.conditional:
    raise UserError(f"--{config_lib.flag_name('conditional')}: this tool "
                    "measures unconditional models only")
  strategy = strategy or tf.distribute.get_strategy()
  policy = precision.resolve(config.train.mixed_precision,
                             config.train.allow_slow).policy
  with strategy.scope(), precision.policy_scope(policy):
    vae = models.get(config.model.name).create(
        image_shape, config.model.latent_dim,
        learned_scale=config.model.learned_scale)
    trainer = make_trainer(vae, config, strategy, policy,
                           pipeline.steps_per_epoch(num_train_examples,
                                                    config.train.batch_size))
  return vae, trainer


def build(config: RunConfig) -> RunParts:
  """Turns a config into a ready-to-train run, restored from its checkpoint.

  Raises:
    UserError: For bad flags, data, model directories or checkpoints.
  """
  train = config.train
  distribute.configure_devices(config.distribution)
  strategy = distribute.make_strategy(config.distribution)
  role = distribute.task_role(strategy)
  # Only the chief writes the run's files; other workers write what must be
  # written (checkpoints: saving is collective) to a scratch directory.
  write_dir = (train.model_dir if role.is_chief
               else role.scratch_dir(train.model_dir))
  preflight.writable_directory("model_dir", write_dir)
  if train.export_dir and role.is_chief:
    preflight.writable_directory("export_dir", train.export_dir)
  keras.utils.set_random_seed(train.seed)
  choice = precision.resolve(train.mixed_precision, train.allow_slow)
  data = sources.load(config.data, config.train.seed)
  num_train = len(data.train_images)
  classes = num_classes(config, data)
  check_batch_fits(train.batch_size, strategy, config.distribution.strategy)
  if num_train < train.batch_size:
    raise UserError(f"--batch_size={train.batch_size}: larger than the "
                    f"{num_train} training examples")
  spec = models.get(config.model.name)
  last_step = total_steps(config, num_train)
  create = functools.partial(
      spec.create, data.image_shape, config.model.latent_dim,
      pixel_mean=pipeline.target_mean(data.train_images, config.data.binarize),
      learned_scale=config.model.learned_scale, num_classes=classes)
  _check_before_training(config, create, data, strategy, role, last_step)
  with strategy.scope(), precision.policy_scope(choice.policy):
    vae = create()
    trainer = make_trainer(vae, config, strategy, choice.policy,
                           pipeline.steps_per_epoch(num_train,
                                                    train.batch_size))
    eval_config = evaluation_model_config(config.model)
    evaluator = elbo_evaluator.Evaluator(vae, eval_config, strategy)
    nll_evaluator = None
    if train.eval_nll_samples:
      nll_evaluator = likelihood.ImportanceSampledEvaluator(
          *likelihood.model_functions(vae, eval_config), strategy,
          data.image_shape, config.model.latent_dim, train.eval_nll_samples,
          train.batch_size, train.seed, conditional=vae.conditional)
  checkpointer = checkpointing.Checkpointer(
      write_dir, trainer, checkpointing.architecture_fingerprint(
          spec.name, config.model.latent_dim, data.image_shape, classes,
          config.model.learned_scale),
      train.keep_checkpoints, restore_from=train.model_dir,
      repair=role.is_chief)
  resumed_from = checkpointer.restore_latest()
  trainer.reapply_learning_rate()
  if role.is_chief:
    write_config(train.model_dir, config)
  # Hold one copy of the training set: the tensor the pipeline gathers
  # from. tf.convert_to_tensor copies (and .numpy() would copy back), so the
  # loaded array is dropped once converted.
  train_images = pipeline.as_tensor(data.train_images)
  data = dataclasses.replace(data, train_images=None)
  train_labels = pipeline.as_tensor(data.train_labels)
  test_images = pipeline.as_tensor(data.test_images)
  test_labels = pipeline.as_tensor(data.test_labels)
  options = pipeline_options(config)
  return RunParts(
      config=config, strategy=strategy, role=role, write_dir=write_dir,
      precision=choice, data=data, vae=vae, trainer=trainer,
      evaluator=evaluator, nll_evaluator=nll_evaluator,
      checkpointer=checkpointer, writer=summaries.SummaryWriter(write_dir),
      options=options, train_images=train_images, train_labels=train_labels,
      test_images=test_images,
      test_labels=test_labels,
      eval_data=eval_data(strategy, test_images, test_labels,
                          dataclasses.replace(options,
                                              samples_per_example=1)),
      total_steps=last_step, resumed_from=resumed_from)


def _check_before_training(config: RunConfig, create, data, strategy,
                           role: distribute.TaskRole, last_step: int) -> None:
  """What can be known to fail before the first step (`engine.preflight`):
  the model takes the images and fits in memory beside them, and the model
  and export directories have room for a checkpoint and an export, which
  may only replace an export of this engine's.

  Raises:
    UserError: Naming the flag, with the sizes involved.
  """
  train = config.train
  try:
    footprint = preflight.model_footprint(create)
  except ValueError as e:
    raise UserError(f"--model={config.model.name}: cannot take "
                    f"{quoted(data.source)}'s images of shape "
                    f"{data.image_shape} ({e})") from None
  slots = 2 if train.optimizer == "adam" else 0
  try:
    local_replicas = len(strategy.extended.worker_devices)
  except RuntimeError:  # The default strategy has no device list: one.
    local_replicas = 1
  local_batch = (train.batch_size * local_replicas
                 // strategy.num_replicas_in_sync) * config.model.iw_samples
  preflight.check_memory(
      footprint, model=config.model.name, image_shape=data.image_shape,
      batch_size=local_batch, optimizer_slots=slots, replicas=local_replicas,
      data_bytes=data.train_images.nbytes + data.test_images.nbytes)
  preflight.check_free_space("model_dir", train.model_dir,
                             footprint.checkpoint_bytes(slots), "a checkpoint")
  if train.export_dir and role.is_chief:
    preflight.check_free_space("export_dir", train.export_dir,
                               footprint.export_bytes(), "the export")
    export.check_replaceable(train.export_dir, last_step)
