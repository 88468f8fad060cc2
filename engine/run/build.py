"""One build step, in stages: a `RunConfig` becomes a run, restored from
its checkpoint.

`build(config)` lays out devices, makes the strategy and this process's
role, then, each stage a function of what the earlier ones made:
- checks what can be checked before loading (`_check_before_loading`);
- loads the data and checks it against the run (`_load_data`);
- builds the model, its trainer and evaluators (`_model_and_trainer`);
- restores the checkpoint or the `--init_from` weights (`_restore`);
- wires the evaluation, the actions and the `Controller`
  (`wiring.wire`).
The runner (`engine.run.runner`) then only drives the frozen `Run`. The
tools take the same parts from `engine.run.parts`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence, TextIO

import keras

import models
from models import contract
from engine.config import RunConfig
from engine.data import pipeline
from engine.data import sources
from engine.devices import precision
from engine.devices import strategies
from engine.errors import UserError
from engine.eval import evaluator as evaluator_lib
from engine.eval import likelihood
from engine.io import checkpoints
from engine.io import run_dir
from engine.io import summaries
from engine.run import autotune
from engine.run.console import Console
from engine.run import parts
from engine.run import preflight
from engine.run import resume_check
from engine.run import wiring
from engine.run.finish import ResultWriter
from engine.run.workspace import Workspace
from engine.train import recovery
from engine.train import trainer as trainer_lib
from engine.train.controller import Action, Controller
from models.architecture import Architecture
from models.base import VariationalAutoencoder, decoder_floats


@dataclasses.dataclass(frozen=True)
class Run:
  """A built run, ready to train (`runner.train_evaluate_export`).

  Attributes:
    config: Its configuration (resolved: a measured precision included).
    workspace: Where this process writes.
    data: The dataset (its training images handed to the trainer).
    vae: The model.
    trainer: Its trainer.
    controller: Owns the loop and the lifecycle.
    console: Where it prints.
    writer: TensorBoard and metrics.jsonl.
    result_writer: The end action that holds the `RunResult` once done.
    start_line: What the run says first.
    resumed_from: The checkpoint restored, if any.
    initialized_from: The checkpoint a new run took its weights from
      (`--init_from`), if any.
  """

  config: RunConfig
  workspace: Workspace
  data: sources.ImageDataset
  vae: VariationalAutoencoder
  trainer: trainer_lib.Trainer
  controller: Controller
  console: Console
  writer: summaries.SummaryWriter
  result_writer: ResultWriter
  start_line: str
  resumed_from: Optional[str]
  initialized_from: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class LoadedData:
  """The data stage's output.

  Attributes:
    data: The dataset, its training images dropped (the tensor holds them).
    train_images, train_labels: The training set as the pipeline's tensors.
    num_train: Training examples.
    classes: K for a conditional run (0 otherwise).
    last_step: The step the run ends at.
    create: Builds the model (`ModelSpec.create` with its arguments bound).
    architecture: What a checkpoint of the model must agree with.
  """

  data: sources.ImageDataset
  train_images: object
  train_labels: object
  num_train: int
  classes: int
  last_step: int
  create: Callable[[], VariationalAutoencoder]
  architecture: Architecture


@dataclasses.dataclass(frozen=True)
class ModelParts:
  """The model stage's output: the model, its trainer and evaluators.

  Attributes:
    vae: The model.
    trainer: Its trainer.
    choice: The precision policy it runs under.
    recovering: `--nan_policy=recover`'s state (None: not recovering).
    evaluator: The test ELBO and unit statistics.
    nll: The importance-sampled NLL (None: `--eval_nll_samples` is 0).
  """

  vae: VariationalAutoencoder
  trainer: trainer_lib.Trainer
  choice: precision.Choice
  recovering: Optional[recovery.RecoveryState]
  evaluator: evaluator_lib.Evaluator
  nll: Optional[likelihood.ImportanceSampledEvaluator]


def build(config: RunConfig, stream: Optional[TextIO] = None,
          extra_actions: Sequence[Action] = ()) -> Run:
  """Turns a config into a ready-to-train run, restored from its checkpoint.

  Args:
    config: The run's configuration.
    stream: Where the run prints (default: stdout).
    extra_actions: More train actions, after the run's own.

  Raises:
    UserError: For bad flags, data, model directories or checkpoints.
  """
  train = config.train
  strategies.configure_devices(config.distribution)
  strategy = strategies.make_strategy(config.distribution)
  role = strategies.task_role(strategy)
  workspace = Workspace(train.model_dir, role)
  try:
    return _build(config, strategy, role, workspace, Console(stream),
                  tuple(extra_actions))
  except BaseException:
    workspace.close()
    raise


def _build(config: RunConfig, strategy, role, workspace: Workspace,
           console: Console, extra_actions: tuple) -> Run:
  resuming, changed, choice = _check_before_loading(config, strategy, role)
  loaded = _load_data(config, strategy, role, resuming)
  config, model = _model_and_trainer(config, loaded, strategy, role, choice)
  checkpointer, resumed_from, initialized_from = _restore(
      config, loaded, model, workspace, role, changed)
  start_line = parts.start_line(
      config, loaded.data, (loaded.num_train, loaded.data.train_labels),
      model.vae, model.trainer, loaded.last_step, strategy, model.choice,
      role)
  if resumed_from and changed:
    start_line = resume_check.describe_changes(changed) + "\n" + start_line
  wired = wiring.wire(
      config, loaded=loaded, model=model, checkpointer=checkpointer,
      write_dir=workspace.write_dir, strategy=strategy, role=role,
      say=console.say, progress_stream=console, resumed_from=resumed_from,
      extra_actions=extra_actions)
  return Run(config=config, workspace=workspace, data=loaded.data,
             vae=model.vae, trainer=model.trainer,
             controller=wired.controller, console=console,
             writer=wired.writer, result_writer=wired.result_writer,
             start_line=start_line, resumed_from=resumed_from,
             initialized_from=initialized_from)


def _check_before_loading(config: RunConfig, strategy, role):
  """(resuming, the settings changed since the run's start, the precision
  choice or None for `auto`), after the checks that need no data."""
  train = config.train
  resuming = bool(checkpoints.checkpoints_on_disk(train.model_dir))
  changed = resume_check.check_settings(train.model_dir, config, resuming)
  if train.export_dir and role.is_chief:
    preflight.writable_directory("export_dir", train.export_dir)
  choice = (None if train.mixed_precision == "auto" else
            precision.resolve(train.mixed_precision, train.allow_slow))
  preflight.check_before_loading(config, strategy, train.seed)  # Shapes only.
  return resuming, changed, choice


def _load_data(config: RunConfig, strategy, role,
               resuming: bool) -> LoadedData:
  """The data, checked against the run, the batch and the model's input."""
  train = config.train
  data = sources.load(config.data, train.seed)
  num_train = len(data.train_images)
  classes = parts.num_classes(config, data)
  grey_mean = pipeline.target_mean(data.train_images, "none")
  resume_check.check_data(
      train.model_dir, resume_check.data_fingerprint(
          num_train, len(data.test_images), data.image_shape, classes,
          grey_mean), data.source, resuming, write=role.is_chief)
  parts.check_batch_fits(train.batch_size, strategy,
                         config.distribution.strategy)
  if num_train < train.batch_size:
    raise UserError(f"--batch_size={train.batch_size}: larger than the "
                    f"{num_train} training examples")
  spec = models.get(config.model.name)
  last_step = parts.total_steps(config, num_train)
  create = functools.partial(
      spec.create, data.image_shape, config.model.latent_dim,
      pixel_mean=(pipeline.target_mean(data.train_images, "static")
                  if config.data.binarize == "static" else grey_mean),
      learned_scale=config.model.learned_scale, num_classes=classes)
  preflight.check_run(config, create, data, strategy, role.is_chief,
                      last_step)
  # Hold one copy of the training set: the tensor the pipeline gathers
  # from. tf.convert_to_tensor copies (and .numpy() would copy back), so the
  # loaded array is dropped once converted.
  train_images = pipeline.as_tensor(data.train_images)
  train_labels = pipeline.as_tensor(data.train_labels)
  return LoadedData(
      dataclasses.replace(data, train_images=None), train_images,
      train_labels, num_train, classes, last_step, create,
      Architecture(spec.name, config.model.latent_dim, data.image_shape,
                   classes, config.model.learned_scale))


def _model_and_trainer(config: RunConfig, loaded: LoadedData, strategy, role,
                       choice) -> tuple[RunConfig, ModelParts]:
  """The model, its trainer and evaluators (precision measured first where
  `auto`: the config that comes back records the choice)."""
  train = config.train
  if choice is None:
    choice = autotune.choose(config, loaded.create, loaded.train_images,
                             loaded.train_labels, loaded.num_train, strategy,
                             role.is_chief)
    config = autotune.resolved(config, choice)
  keras.utils.set_random_seed(train.seed)  # The same weights, tuned or not.
  with strategy.scope(), precision.policy_scope(choice.policy):
    vae = loaded.create()
    contract.check_behaviour(vae)  # Before any step: no weight changes.
    recovering = (recovery.RecoveryState() if train.nan_policy == "recover"
                  else None)
    trainer = parts.make_trainer(vae, config, strategy, choice.policy,
                                 loaded.num_train,
                                 recovering and recovering.scale)
    objective = parts.objective(config.model).for_evaluation()
    functions = evaluator_lib.model_functions(vae, objective)
    sampled = evaluator_lib.model_sampled_terms(vae, objective)
    evaluator = evaluator_lib.Evaluator(*functions, strategy,
                                        config.model.latent_dim,
                                        conditional=vae.conditional,
                                        sampled=sampled,
                                        latent_groups=vae.latent_groups)
    nll = None
    if train.eval_nll_samples:
      nll = likelihood.ImportanceSampledEvaluator(
          *functions, strategy, loaded.data.image_shape,
          config.model.latent_dim, train.eval_nll_samples, train.batch_size,
          train.seed, conditional=vae.conditional, sampled=sampled,
          jit_compile=trainer.jit_compile,
          rows_per_chunk=likelihood.rows_per_chunk(decoder_floats(vae)))
  return config, ModelParts(vae, trainer, choice, recovering, evaluator, nll)


def _restore(config: RunConfig, loaded: LoadedData, model: ModelParts,
             workspace: Workspace, role, changed):
  """(the checkpointer, the checkpoint resumed from, the one initialized
  from): the latest checkpoint, else `--init_from`'s weights; then the
  trainer's learning rate and data, and on the chief the run's records."""
  train, trainer, recovering = config.train, model.trainer, model.recovering
  checkpointer = checkpoints.Checkpointer(
      workspace.write_dir, **trainer.checkpoint_items(),
      architecture=loaded.architecture, max_to_keep=train.keep_checkpoints,
      restore_from=train.model_dir, repair=role.is_chief,
      flag_dir=train.model_dir,
      state=recovering and recovering.checkpoint_items())
  resumed_from = checkpointer.restore_latest()
  initialized_from = None
  if resumed_from is None and train.init_from:
    initialized_from = checkpointer.initialize_from(train.init_from)
  trainer.set_learning_rate(parts.learning_rate(
      config, loaded.num_train, recovering and recovering.scale))
  trainer.feed(loaded.train_images, parts.pipeline_options(config),
               train.steps_per_loop, loaded.last_step,
               labels=loaded.train_labels if model.vae.conditional else None)
  if role.is_chief:
    if resumed_from:
      resume_check.record_changes(train.model_dir, trainer.step, changed)
    run_dir.write_config(train.model_dir, config)
  return checkpointer, resumed_from, initialized_from
