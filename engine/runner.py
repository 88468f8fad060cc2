"""One training run, end to end.

`run(config)` = `build.build(config)` (the run's parts, restored from the
latest checkpoint), then `train_evaluate_export(parts)`: a
`controller.Controller` trains to the last step, handing each compiled call's
outputs to the actions (progress and summaries, checkpoints, evaluation,
non-finite stop, preemption, profiling); then the run saves, evaluates,
draws the figures, exports, and writes its result as JSON
(`<model_dir>/result.json`) for tools and tests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from typing import Optional, TextIO

import numpy as np
import tensorflow as tf

from engine import actions
from engine import build as build_lib
from engine import export as export_lib
from engine import files
from engine.build import RunParts
from engine.config import RunConfig
from engine.controller import Controller
from engine.errors import UserError, quoted, reason
from engine.evaluation import RunEvaluation

Preempted = actions.Preempted
RESULT_JSON = "result.json"


@dataclasses.dataclass(frozen=True)
class RunResult:
  """What a run produced (also written as `<model_dir>/result.json`).

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


def read_result(model_dir: str) -> RunResult:
  """The `RunResult` a finished run wrote into `model_dir`."""
  return RunResult(**json.loads(files.read_text(files.join(model_dir,
                                                           RESULT_JSON))))


def weights_fingerprint(vae) -> str:
  """A hash of this process's copy of the weights, to compare runs."""
  digest = hashlib.sha256()
  for variable in vae.trainable_variables:
    digest.update(variable.numpy().tobytes())
  return digest.hexdigest()[:16]


def save_checkpoint(parts: RunParts, step: int) -> str:
  """Saves on every worker; returns the chief's checkpoint path.

  Raises:
    UserError: If the checkpoint cannot be written (disk full, directory gone
      or read-only); the previous checkpoint is untouched, since TF writes a
      new one beside it and the state file is replaced last.
  """
  previous = parts.checkpointer.latest
  try:
    parts.checkpointer.save(step)
  except (tf.errors.OpError, OSError) as e:
    kept = (f"the previous checkpoint, {previous}, is intact" if previous
            else "no earlier checkpoint exists")
    raise UserError(
        f"--model_dir={quoted(parts.config.train.model_dir)}: could not "
        f"write checkpoint ckpt-{step} ({reason(e)}); {kept}. Free space "
        "or fix the directory, then re-run to resume") from None
  return os.path.join(parts.config.train.model_dir, f"ckpt-{step}")


def training_actions(parts: RunParts, evaluation: RunEvaluation,
                     stream: TextIO, say) -> list[actions.Action]:
  """The actions of a run, in the order they act after each loop call."""
  train = parts.config.train
  start = int(parts.trainer.global_step.numpy())

  def save(step):
    return save_checkpoint(parts, step)

  return [
      actions.ProfileAction(train.profile_steps, parts.write_dir, say),
      actions.NonFiniteStopAction(parts.trainer.non_finite, train.nan_policy,
                                  train.max_skipped_steps,
                                  lambda: parts.checkpointer.latest),
      actions.PreemptionAction(parts.strategy, save),
      actions.ProgressAction(train.log_every, parts.total_steps, start,
                             stream, parts.writer, say),
      actions.CheckpointAction(train.checkpoint_every, save),
      actions.EvaluationAction(train.eval_every, parts.total_steps,
                               evaluation),
  ]


def train(parts: RunParts, evaluation: RunEvaluation, stream: TextIO,
          say, extra_actions: tuple = ()) -> int:
  """Trains from the restored step to the last one; returns the step reached.

  Args:
    parts: The built run.
    evaluation: What evaluates it between steps.
    stream: Where progress goes.
    say: Prints one line.
    extra_actions: More actions, run after the run's own.

  Raises:
    Preempted: After saving a checkpoint, if any worker got SIGTERM.
    TrainingDiverged: If the non-finite guard stopped the run.
  """
  start = int(parts.trainer.global_step.numpy())
  if start >= parts.total_steps:
    return start
  train_config = parts.config.train
  batches = parts.trainer.training_batches(
      parts.train_images, parts.options, train_config.steps_per_loop, start,
      parts.total_steps,
      labels=parts.train_labels if parts.vae.conditional else None)
  controller = Controller(
      lambda num_steps: parts.trainer.train(batches, num_steps),
      training_actions(parts, evaluation, stream, say) + list(extra_actions),
      parts.total_steps, train_config.steps_per_loop)
  return controller.run(start)


def run(config: RunConfig, stream: TextIO | None = None,
        extra_actions: tuple = ()) -> RunResult:
  """Trains, evaluates, draws and exports as `config` says.

  Args:
    config: The run's configuration.
    stream: Where progress goes (stdout by default).
    extra_actions: `controller.Action`s to run after the run's own (e.g. a
      recorder of each step's loss).

  Returns:
    A `RunResult`.

  Raises:
    UserError: For bad flags, data or model directories.
  """
  parts = build_lib.build(config)
  try:
    return train_evaluate_export(parts, stream or sys.stdout, extra_actions)
  finally:
    if not parts.role.is_chief:
      files.remove_tree(parts.write_dir)
      try:  # The last one out removes the scratch directory's parent.
        scratch = os.path.dirname(parts.write_dir)
        if not files.gfile.listdir(scratch):
          files.remove_tree(scratch)
      except tf.errors.OpError:
        pass


def _start_line(parts: RunParts) -> str:
  config, role = parts.config, parts.role
  labels = parts.data.train_labels
  classes = len(np.unique(labels[labels >= 0]))
  return (f"training {config.model.name} (latent {config.model.latent_dim}"
          f"{', conditional' if parts.vae.conditional else ''}) "
          f"on {parts.data.source}: {parts.num_train_examples} train / "
          f"{parts.num_test_examples} test images "
          f"({f'{classes} classes' if classes else 'unlabelled'}), "
          f"{parts.total_steps} steps "
          f"of {config.train.batch_size}, "
          f"{parts.strategy.num_replicas_in_sync} replica(s), "
          f"{parts.precision.describe()}"
          f"{', XLA' if config.train.jit_compile else ''}"
          + ("" if role.task_type is None else
             f", task {role.task_type}:{role.task_id}"
             f"{' (chief)' if role.is_chief else ''}"))


def train_evaluate_export(parts: RunParts, stream: TextIO,
                          extra_actions: tuple = ()) -> RunResult:
  """Trains a built run to its last step, then saves, evaluates, draws the
  figures and exports (see `run`)."""
  config = parts.config

  def say(message: str) -> None:
    print(message, file=stream, flush=True)

  if parts.resumed_from:
    say(f"resumed from {parts.resumed_from} at step "
        f"{int(parts.trainer.global_step.numpy())}")
  say(_start_line(parts))
  evaluation = RunEvaluation(parts, say)
  step = train(parts, evaluation, stream, say, extra_actions)
  checkpoint = parts.checkpointer.latest
  if checkpoint is None or not checkpoint.endswith(f"-{step}"):
    checkpoint = save_checkpoint(parts, step)
  metrics = evaluation(step)
  if config.train.sample_quality and parts.role.is_chief:
    metrics.update(evaluation.sample_quality(step))
  parts.writer.flush()
  figure_paths = []
  if config.train.figures and parts.role.is_chief:
    figure_paths = evaluation.write_figures()
  export_path = None
  if config.train.export_dir:
    export_dir = (config.train.export_dir if parts.role.is_chief else
                  os.path.join(parts.write_dir, "export"))
    try:
      export_path = export_lib.export(parts.vae, export_dir, step,
                                      denoising=config.data.noise_factor > 0)
    except UserError as e:
      raise UserError(
          f"{e}; the trained model is saved in {quoted(checkpoint)}: once "
          "fixed, export it with tools/export.py --model_dir="
          f"{quoted(config.train.model_dir)}") from None
    say(f"exported SavedModel to {export_path}")
  fingerprint = weights_fingerprint(parts.vae)
  say(f"done: step {step}, test ELBO {metrics['elbo']:.2f} nats, "
      f"weights {fingerprint}")
  result = RunResult(step, metrics, checkpoint, parts.resumed_from,
                     export_path, figure_paths, fingerprint)
  if parts.role.is_chief:
    _write_result(config.train.model_dir, result)
  return result


def _write_result(model_dir: str, result: RunResult) -> None:
  files.write_atomically(files.join(model_dir, RESULT_JSON),
                         json.dumps(dataclasses.asdict(result), indent=2))
