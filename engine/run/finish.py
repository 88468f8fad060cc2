"""What a run does once training is done (the controller's end actions),
in this order: score prior samples, draw the figures, export, and write the
result (`<model_dir>/result.json`, what tools and tests read).

Each takes the `controller.RunEnd` and fills in what it made.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Optional

from engine.errors import UserError, quoted
from engine.eval import sample_quality
from engine.io import files
from engine.io import summaries
from engine.run.evaluation import (TestSet, figure_functions, scalars,
                                   whole_model_functions)
from engine.serving import export as export_lib
from engine.train.actions import Say
from engine.train.controller import RunEnd
from engine.viz import figure_set

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
    recoveries: This process's `--nan_policy=recover` recoveries (step,
      terms, checkpoint restored, learning-rate scale, count).
  """

  final_step: int
  test_metrics: dict
  checkpoint: str
  resumed_from: Optional[str]
  export_path: Optional[str]
  figure_paths: list
  weights_fingerprint: str = ""
  recoveries: list = dataclasses.field(default_factory=list)


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


class SampleQuality:
  """Scores `count` prior samples with the dataset's classifier (cached in
  the model directory; see `engine.eval.sample_quality`)."""

  def __init__(self, vae, model_dir: str, train_images, train_labels,
               test: TestSet, test_images, test_labels, writer, say: Say,
               seed: int, count: int = 10_000):
    self.vae, self.model_dir, self.writer, self.say = vae, model_dir, writer, say
    self.train = (train_images, train_labels)
    self.test_images, self.test_labels = test_images, test_labels
    self.seed, self.count = seed, count
    self.decode = whole_model_functions(vae)[1]  # Ancestral draws.

  def __call__(self, end: RunEnd) -> None:
    classifier = sample_quality.load_or_train(
        self.model_dir, *self.train, self.test_images, self.test_labels,
        seed=self.seed)
    samples, labels = sample_quality.prior_samples(
        self.decode, self.vae.latent_dim, self.count, self.seed,
        self.vae.num_classes)
    scores = sample_quality.score(classifier, self.test_images, samples,
                                  labels)
    self.writer.scalars("eval", end.step, scores)
    self.say(f"eval step {end.step}: "
             f"{sample_quality.describe(scores, self.count)}")
    end.metrics.update(scores)


class Figures:
  """Every figure of the run, into `<model_dir>/figures`."""

  def __init__(self, vae, test: TestSet, model_dir: str, seed: int,
               denoising: bool, kl_per_unit: Callable[[], object],
               class_names: Optional[tuple[str, ...]] = None):
    self.vae, self.test, self.model_dir = vae, test, model_dir
    self.seed, self.denoising, self.kl_per_unit = seed, denoising, kl_per_unit
    self.class_names = class_names

  def __call__(self, end: RunEnd) -> None:
    encode, decode = figure_functions(self.vae)
    reconstruct, sample = whole_model_functions(self.vae)
    test = self.test.first(self.test.size)
    end.figure_paths = figure_set.write_run_figures(
        encode, decode, self.vae.top_dim, test["inputs"], test["targets"],
        test["labels"], summaries.read_metrics(self.model_dir),
        files.join(self.model_dir, "figures"), self.seed,
        denoising=self.denoising, kl_per_unit=_top_group(
            self.kl_per_unit(), self.vae),
        num_classes=self.vae.num_classes, reconstruct=reconstruct,
        sample=sample, sample_dim=self.vae.latent_dim,
        class_names=self.class_names)


def _top_group(kl_per_unit, vae):
  return None if kl_per_unit is None else kl_per_unit[vae.top_group]


class Export:
  """The SavedModel of the final weights, as `<export_dir>/<step>/`."""

  def __init__(self, vae, export_dir: str, model_dir: str, denoising: bool,
               say: Say):
    self.vae, self.export_dir, self.model_dir = vae, export_dir, model_dir
    self.denoising, self.say = denoising, say

  def __call__(self, end: RunEnd) -> None:
    end.export_path = self.at_step(end.step, end.checkpoint)

  def at_step(self, step: int, checkpoint: Optional[str] = None) -> str:
    """Exports the current weights as `<export_dir>/<step>/`."""
    try:
      path = export_lib.export(self.vae, self.export_dir, step,
                               denoising=self.denoising)
    except UserError as e:
      saved = (f"the trained model is saved in {quoted(checkpoint)}"
               if checkpoint else "its checkpoint is kept")
      raise UserError(
          f"{e}; {saved}: once fixed, export it with tools/export.py "
          f"--model_dir={quoted(self.model_dir)}") from None
    self.say(f"exported SavedModel to {path}")
    return path


class ResultWriter:
  """The end action that makes the `RunResult`: the done line, and
  `<model_dir>/result.json` on the chief."""

  def __init__(self, vae, model_dir: str, resumed_from: Optional[str],
               say: Say, write: bool, recoveries: Optional[list] = None):
    self.vae, self.model_dir, self.resumed_from = vae, model_dir, resumed_from
    self.say, self.write = say, write
    self.recoveries = [] if recoveries is None else recoveries
    self.result: Optional[RunResult] = None

  def __call__(self, end: RunEnd) -> None:
    fingerprint = weights_fingerprint(self.vae)
    self.say(f"done: step {end.step}, test ELBO {end.metrics['elbo']:.2f} "
             f"nats, weights {fingerprint}")
    self.result = RunResult(end.step, scalars(end.metrics), end.checkpoint,
                            self.resumed_from, end.export_path,
                            end.figure_paths, fingerprint,
                            list(self.recoveries))
    if self.write:
      files.write_atomically(files.join(self.model_dir, RESULT_JSON),
                             json.dumps(dataclasses.asdict(self.result),
                                        indent=2))


def scratch_export_dir(write_dir: str) -> str:
  """Where a non-chief worker's export goes (it is not kept)."""
  return os.path.join(write_dir, "export")
