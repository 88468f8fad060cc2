"""One build step: a `RunConfig` becomes a run, restored from its checkpoint.

`build(config)` lays out devices, makes the strategy and this process's
role, loads the data, checks what can be checked before training
(`preflight`), builds the model, trainer, evaluator and checkpoints, and
wires them into a `Controller` with its train, eval and end actions; the
runner (`engine.run.runner`) then only drives it. The tools take the same
parts from `engine.run.parts`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
from typing import Optional

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
from engine.io import files
from engine.io import run_dir
from engine.io import summaries
from engine.run import autotune
from engine.run import best
from engine.run import finish
from engine.run import parts
from engine.run import preflight
from engine.run import resume_check
from engine.run.workspace import Workspace
from engine.run.evaluation import (ImageSummaries, ReportEvaluation,
                                   RunEvaluator, TestSet)
from engine.train import actions
from engine.train import loop_state
from engine.train import recovery
from engine.train import trainer as trainer_lib
from engine.train.controller import Controller
from models.architecture import Architecture
from models.base import VariationalAutoencoder, decoder_floats


class Console:
  """Where a run prints (a stream chosen when it starts): `say` prints a
  line; it is also a file for the progress line."""

  def __init__(self):
    self.stream = sys.stdout

  def say(self, message: str) -> None:
    print(message, file=self.stream, flush=True)

  def write(self, text: str) -> None:
    self.stream.write(text)

  def flush(self) -> None:
    self.stream.flush()


@dataclasses.dataclass
class Run:
  """A built run, ready to train (`runner.train_evaluate_export`).

  Attributes:
    config: Its configuration.
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
  result_writer: finish.ResultWriter
  start_line: str
  resumed_from: Optional[str]
  initialized_from: Optional[str] = None


def build(config: RunConfig) -> Run:
  """Turns a config into a ready-to-train run, restored from its checkpoint.

  Raises:
    UserError: For bad flags, data, model directories or checkpoints.
  """
  train = config.train
  strategies.configure_devices(config.distribution)
  strategy = strategies.make_strategy(config.distribution)
  role = strategies.task_role(strategy)
  workspace = Workspace(train.model_dir, role)
  try:
    return _build(config, strategy, role, workspace)
  except BaseException:
    workspace.close()
    raise


def _build(config: RunConfig, strategy, role, workspace: Workspace) -> Run:
  train = config.train
  resuming = bool(checkpoints.checkpoints_on_disk(train.model_dir))
  changed = resume_check.check_settings(train.model_dir, config, resuming)
  if train.export_dir and role.is_chief:
    preflight.writable_directory("export_dir", train.export_dir)
  choice = (None if train.mixed_precision == "auto" else
            precision.resolve(train.mixed_precision, train.allow_slow))
  preflight.check_before_loading(config, strategy, train.seed)  # Shapes only.
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
  start_line_data = (len(data.train_images), data.train_labels)
  data = dataclasses.replace(data, train_images=None)
  if choice is None:
    choice = autotune.choose(config, create, train_images, train_labels,
                             num_train, strategy, role.is_chief)
    config = autotune.resolved(config, choice)
  keras.utils.set_random_seed(train.seed)  # The same weights, tuned or not.
  with strategy.scope(), precision.policy_scope(choice.policy):
    vae = create()
    contract.check_behaviour(vae)  # Before any step: no weight changes.
    recovering = (recovery.RecoveryState() if train.nan_policy == "recover"
                  else None)
    trainer = parts.make_trainer(vae, config, strategy, choice.policy,
                                 num_train, recovering and recovering.scale)
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
          *functions, strategy, data.image_shape, config.model.latent_dim,
          train.eval_nll_samples, train.batch_size, train.seed,
          conditional=vae.conditional, sampled=sampled,
          jit_compile=trainer.jit_compile,
          rows_per_chunk=likelihood.rows_per_chunk(decoder_floats(vae)))
  checkpointer = checkpoints.Checkpointer(
      workspace.write_dir, **trainer.checkpoint_items(),
      architecture=Architecture(spec.name, config.model.latent_dim,
                                data.image_shape, classes,
                                config.model.learned_scale),
      max_to_keep=train.keep_checkpoints, restore_from=train.model_dir,
      repair=role.is_chief, flag_dir=train.model_dir,
      state=recovering and recovering.checkpoint_items())
  resumed_from = checkpointer.restore_latest()
  initialized_from = None
  if resumed_from is None and train.init_from:
    initialized_from = checkpointer.initialize_from(train.init_from)
  trainer.set_learning_rate(
      parts.learning_rate(config, num_train, recovering and recovering.scale))
  if role.is_chief:
    if resumed_from:
      resume_check.record_changes(train.model_dir, trainer.step, changed)
    run_dir.write_config(train.model_dir, config)
  start_line = parts.start_line(config, data, start_line_data, vae,
                                trainer, last_step, strategy, choice, role)
  if resumed_from and changed:
    start_line = resume_check.describe_changes(changed) + "\n" + start_line
  options = parts.pipeline_options(config)
  trainer.feed(train_images, options, train.steps_per_loop, last_step,
               labels=train_labels if vae.conditional else None)
  test_images = pipeline.as_tensor(data.test_images)
  test_labels = pipeline.as_tensor(data.test_labels)
  eval_options = dataclasses.replace(options, samples_per_example=1)
  test = TestSet(test_images, test_labels, eval_options, parts.eval_data(
      strategy, test_images, test_labels, eval_options))
  console = Console()
  writer = summaries.SummaryWriter(workspace.write_dir)
  if role.is_chief:
    writer.hparams(parts.hparams(config, trainer))
  run_evaluator = RunEvaluator(
      evaluator, test, nll,
      math.prod(data.image_shape)
      if config.model.reconstruction_loss == "discretized_logistic"
      else None, average=trainer.average,
      # Reading the sums is a collective across workers: a line timed by
      # each worker's clock would desynchronize them, so one process only.
      progress=console.say if role.task_type is None else None)
  recover = recovering and recovery.RecoveryAction(
      recovering, checkpointer.restore_latest, train.recover_lr_factor,
      train.max_recoveries, console.say)
  result_writer = finish.ResultWriter(
      vae, train.model_dir, resumed_from, console.say, write=role.is_chief,
      recoveries=recover.events if recover else [])
  end_actions = []
  if train.sample_quality and role.is_chief:
    end_actions.append(finish.SampleQuality(
        vae, train.model_dir, train_images, data.train_labels, test,
        data.test_images, data.test_labels, writer, console.say, train.seed))
  if train.figures and role.is_chief:
    end_actions.append(finish.Figures(
        vae, test, train.model_dir, train.seed, config.data.noise_factor > 0,
        lambda: run_evaluator.kl_per_unit, data.class_names))
  export_dir = (train.export_dir if role.is_chief or not train.export_dir
                else finish.scratch_export_dir(workspace.write_dir))
  if export_dir:
    end_actions.append(finish.Export(
        vae, export_dir, train.model_dir, config.data.noise_factor > 0,
        console.say))
  eval_actions = [ReportEvaluation(writer, console.say,
                                   config.model.latent_dim,
                                   vae.latent_groups),
                  ImageSummaries(vae, test, writer, train.seed)]
  if train.keep_best != "none":
    eval_actions.append(best.KeepBest(
        train.keep_best, checkpointer, workspace.write_dir,
        export_dir and finish.Export(
            vae, files.join(export_dir, checkpoints.BEST_DIR),
            train.model_dir, config.data.noise_factor > 0,
            console.say).at_step, console.say))
  controller = Controller(
      evaluation_weights=(trainer.average.swapped if trainer.average
                          else contextlib.nullcontext),
      trainer=trainer, evaluator=run_evaluator, checkpoints=checkpointer,
      last_step=last_step, steps_per_loop=train.steps_per_loop,
      checkpoint_every=train.checkpoint_every, eval_every=train.eval_every,
      train_actions=[
          actions.ProfileAction(train.profile_steps, workspace.write_dir,
                                console.say),
          *([recover] if recover else []),
          actions.GuardStopAction(
              train.nan_policy, train.max_skipped_steps, train.skip_grad_norm,
              lambda: checkpointer.latest,
              causes=[cause for cause in loop_state.CAUSES
                      if not (recover and cause == loop_state.NON_FINITE)]),
          actions.PreemptionAction(strategy, checkpointer.save),
          actions.ProgressAction(
              train.log_every, last_step, trainer.step, console, writer,
              console.say, learning_rate=trainer.learning_rate_now,
              steps_per_epoch=pipeline.steps_per_epoch(num_train,
                                                       train.batch_size))],
      eval_actions=eval_actions,
      end_actions=[*end_actions, result_writer])
  return Run(config=config, workspace=workspace, data=data, vae=vae,
             trainer=trainer, controller=controller, console=console,
             writer=writer, result_writer=result_writer,
             start_line=start_line,
             resumed_from=resumed_from, initialized_from=initialized_from)
