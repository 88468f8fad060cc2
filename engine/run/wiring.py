"""The build's last stage: a run's evaluation, actions and controller, from
the parts the earlier stages made (`engine.run.build`).

`wire` makes the test set and its evaluator, the summary writer, the train,
eval and end actions in the order they run, and the `Controller` that owns
the loop; it reads nothing the earlier stages did not hand it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

from engine.config import RunConfig
from engine.data import pipeline
from engine.io import checkpoints
from engine.io import files
from engine.io import summaries
from engine.run import best
from engine.run import finish
from engine.run import parts
from engine.run.evaluation import (ImageSummaries, ReportEvaluation,
                                   RunEvaluator, TestSet)
from engine.train import actions
from engine.train import loop_state
from engine.train import recovery
from engine.train.controller import Action, Controller


@dataclasses.dataclass(frozen=True)
class Wired:
  """What `wire` made.

  Attributes:
    controller: Owns the loop and the lifecycle.
    writer: TensorBoard and metrics.jsonl.
    result_writer: The end action that holds the `RunResult` once done.
  """

  controller: Controller
  writer: summaries.SummaryWriter
  result_writer: finish.ResultWriter


def wire(config: RunConfig, *, loaded, model, checkpointer, write_dir: str,
         strategy, role, say: Callable[[str], None], progress_stream,
         resumed_from: Optional[str],
         extra_actions: Sequence[Action] = ()) -> Wired:
  """The run's evaluation, actions and controller.

  Args:
    config: The run's (resolved) configuration.
    loaded: The data stage's `build.LoadedData`.
    model: The model stage's `build.ModelParts`.
    checkpointer: The run's one saver, restored.
    write_dir: Where this process writes (`Workspace.write_dir`).
    strategy, role: The strategy and this process's role.
    say: Where lines go; `progress_stream` takes the progress line.
    resumed_from: The checkpoint restored, if any (for the result).
    extra_actions: More train actions, after the run's own.
  """
  train = config.train
  vae, trainer, data = model.vae, model.trainer, loaded.data
  options = parts.pipeline_options(config)
  test_images = pipeline.as_tensor(data.test_images)
  test_labels = pipeline.as_tensor(data.test_labels)
  eval_options = dataclasses.replace(options, samples_per_example=1)
  test = TestSet(test_images, test_labels, eval_options, parts.eval_data(
      strategy, test_images, test_labels, eval_options))
  writer = summaries.SummaryWriter(write_dir)
  if role.is_chief:
    writer.hparams(parts.hparams(config, trainer))
  run_evaluator = RunEvaluator(
      model.evaluator, test, model.nll,
      math.prod(data.image_shape)
      if config.model.reconstruction_loss == "discretized_logistic"
      else None,
      # Reading the sums is a collective across workers: a line timed by
      # each worker's clock would desynchronize them, so one process only.
      progress=say if role.task_type is None else None)
  recover = model.recovering and recovery.RecoveryAction(
      model.recovering, checkpointer.restore_latest, train.recover_lr_factor,
      train.max_recoveries, say)
  result_writer = finish.ResultWriter(
      vae, train.model_dir, resumed_from, say, write=role.is_chief,
      recoveries=recover.events if recover else [])
  noisy = config.data.noise_factor > 0
  end_actions = []
  if train.sample_quality and role.is_chief:
    end_actions.append(finish.SampleQuality(
        vae, train.model_dir, loaded.train_images, data.train_labels, test,
        data.test_images, data.test_labels, writer, say, train.seed))
  if train.figures and role.is_chief:
    end_actions.append(finish.Figures(
        vae, test, train.model_dir, train.seed, noisy,
        lambda: run_evaluator.kl_per_unit, data.class_names))
  export_dir = (train.export_dir if role.is_chief or not train.export_dir
                else finish.scratch_export_dir(write_dir))
  if export_dir:
    end_actions.append(finish.Export(vae, export_dir, train.model_dir, noisy,
                                     say))
  eval_actions = [ReportEvaluation(writer, say, config.model.latent_dim,
                                   vae.latent_groups),
                  ImageSummaries(vae, test, writer, train.seed)]
  if train.keep_best != "none":
    eval_actions.append(best.KeepBest(
        train.keep_best, checkpointer, write_dir,
        export_dir and finish.Export(
            vae, files.join(export_dir, checkpoints.BEST_DIR),
            train.model_dir, noisy, say).at_step, say))
  controller = Controller(
      # The moving average, where there is one, is what is evaluated and
      # shipped; the controller alone puts it in the model.
      evaluation_weights=trainer.average and trainer.average.swapped,
      trainer=trainer, evaluator=run_evaluator, checkpoints=checkpointer,
      last_step=loaded.last_step, steps_per_loop=train.steps_per_loop,
      checkpoint_every=train.checkpoint_every, eval_every=train.eval_every,
      train_actions=[
          actions.ProfileAction(train.profile_steps, write_dir, say),
          *([recover] if recover else []),
          actions.GuardStopAction(
              train.nan_policy, train.max_skipped_steps, train.skip_grad_norm,
              lambda: checkpointer.latest,
              causes=[cause for cause in loop_state.CAUSES
                      if not (recover and cause == loop_state.NON_FINITE)]),
          actions.PreemptionAction(strategy, checkpointer.save),
          actions.ProgressAction(
              train.log_every, loaded.last_step, trainer.step,
              progress_stream, writer, say,
              learning_rate=trainer.learning_rate_now,
              steps_per_epoch=pipeline.steps_per_epoch(loaded.num_train,
                                                       train.batch_size)),
          *extra_actions],
      eval_actions=eval_actions,
      end_actions=[*end_actions, result_writer])
  return Wired(controller, writer, result_writer)
