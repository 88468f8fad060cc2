"""The parts of a run, each made from a config: what the build step
(`engine.run.build`) assembles, and what the tools take one by one so that a
setting means the same everywhere."""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

import models
from models import contract
from engine import config as config_lib
from engine.config import ModelConfig, RunConfig
from engine.data import pipeline
from engine.data import sources
from engine.devices import precision
from engine.errors import UserError, quoted
from engine.objectives import elbo
from engine.train import optimization
from engine.train import trainer as trainer_lib
from engine.train.step_options import StepOptions
from models.base import VariationalAutoencoder


def objective(model_config: ModelConfig) -> elbo.Objective:
  """The training objective the model settings describe."""
  return elbo.Objective(
      likelihood=model_config.reconstruction_loss,
      gaussian_stddev=model_config.gaussian_stddev,
      objective=model_config.objective, beta=model_config.beta,
      free_bits=model_config.free_bits)


def learning_rate(config: RunConfig, num_train_examples: int, scale=None):
  """The optimizer's learning rate: a float, or the schedule of its steps
  (times `scale`, a variable, where given)."""
  train = config.train
  return optimization.learning_rate(
      train.lr_schedule, train.learning_rate,
      pipeline.steps_per_epoch(num_train_examples, train.batch_size),
      total_steps=total_steps(config, num_train_examples),
      warmup_steps=train.warmup_steps, decay_rate=train.lr_decay_rate,
      decay_steps=train.lr_decay_steps, min_fraction=train.lr_min_fraction,
      boundaries=train.lr_boundaries, scale=scale)


def make_trainer(vae: VariationalAutoencoder, config: RunConfig,
                 strategy: tf.distribute.Strategy, policy: str,
                 num_train_examples: int,
                 lr_scale=None) -> trainer_lib.Trainer:
  """The run's trainer and optimizer (create it inside `strategy.scope()`;
  `lr_scale`: a variable the learning rate is multiplied by)."""
  train = config.train
  optimizer = optimization.make_optimizer(
      train.optimizer, learning_rate(config, num_train_examples, lr_scale),
      epsilon=optimization.adam_epsilon(train.lr_schedule),
      loss_scaling=policy == "mixed_float16", beta_1=train.adam_beta_1,
      beta_2=train.adam_beta_2, weight_decay=train.weight_decay)
  return trainer_lib.Trainer(
      vae, objective(config.model), optimizer, strategy, train.batch_size,
      step_options(config))


def step_options(config: RunConfig) -> StepOptions:
  """How the run's trainer takes each step: the settings of the same
  names."""
  train = config.train
  return StepOptions(
      kl_warmup_steps=config.model.kl_warmup_steps,
      jit_compile=train.jit_compile, nan_policy=train.nan_policy,
      max_skipped_steps=train.max_skipped_steps,
      clip_grad_norm=train.clip_grad_norm,
      skip_grad_norm=train.skip_grad_norm, ema_decay=train.ema_decay,
      ema_dynamic_decay=train.ema_dynamic_decay)


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
    contract.check_behaviour(vae)
    trainer = make_trainer(vae, config, strategy, policy, num_train_examples)
  return vae, trainer


# Where a run's files go, not what it is: no column in the hparams table.
_NOT_HPARAMS = ("model_dir", "export_dir", "profile_steps")


def hparams(config: RunConfig, trainer) -> dict:
  """The run's settings by flag name, as TensorBoard's hparams take them
  (unset ones as "default", lists as text), and whether XLA ran."""
  values = {}
  for declared in config_lib.all_settings():
    if declared.field in _NOT_HPARAMS:
      continue
    value = getattr(getattr(config, declared.section), declared.field)
    values[declared.flag] = (value if isinstance(value, (bool, int, float, str))
                             else "default" if value is None else str(value))
  values["xla"] = bool(trainer.jit_compile)
  return values


def start_line(config: RunConfig, data: sources.ImageDataset, train_data,
               vae, trainer, last_step: int, strategy,
               choice: precision.Choice, role) -> str:
  """The line a run starts with: what trains on what, how."""
  num_train, labels = train_data
  classes = len(np.unique(labels[labels >= 0]))
  return (f"training {config.model.name} (latent {config.model.latent_dim}"
          f"{', conditional' if vae.conditional else ''}) "
          f"on {data.source}: {num_train} train / "
          f"{len(data.test_images)} test images "
          f"({f'{classes} classes' if classes else 'unlabelled'}), "
          f"{last_step} steps of {config.train.batch_size}, "
          f"{strategy.num_replicas_in_sync} replica(s), "
          f"{choice.describe()}"
          f", {'XLA' if trainer.jit_compile else 'no XLA'}"
          f"{f' (auto: {trainer.xla_reason})' if trainer.xla_reason else ''}"
          + ("" if role.task_type is None else
             f", task {role.task_type}:{role.task_id}"
             f"{' (chief)' if role.is_chief else ''}")
          + f", into {config.train.model_dir}"
          + ("\nnote: --strategy=mirrored found no GPU, so one replica on "
             "the CPU; --cpu_devices=N splits the CPU to try mirrored"
             if config.distribution.strategy == "mirrored"
             and strategy.num_replicas_in_sync == 1
             and not tf.config.list_logical_devices("GPU") else ""))
