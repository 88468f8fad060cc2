"""--keep_best: the best evaluation's checkpoint and export (engine.run.best)."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.io import summaries
from engine.run import best
from engine.run import runner
from tests.helpers import assert_one_line_error
from tests.helpers import run_in_process

pytestmark = pytest.mark.e2e


class _Checkpointer:
  def __init__(self):
    self.saved = []

  def save_best(self, step):
    self.saved.append(step)
    return f"best/ckpt-{step}"


@pytest.mark.parametrize("metric,values", [
    ("elbo", [-100.0, -90.0, -95.0, -92.0, -80.0]),
    ("nll", [100.0, 90.0, 95.0, 92.0, 80.0]),  # Lower is better.
])
def test_only_what_beats_the_best_so_far_is_kept_across_a_resume(
    tmp_path, metric, values):
  checkpointer = _Checkpointer()
  keep = best.KeepBest(metric, checkpointer, str(tmp_path), None, print)
  for step, value in enumerate(values[:3], 1):
    keep(step, {metric: value})
  # Resumed: a new action reads the record and keeps only what beats it.
  keep = best.KeepBest(metric, checkpointer, str(tmp_path), None, print)
  for step, value in enumerate(values[3:], 4):
    keep(step, {metric: value})
  assert checkpointer.saved == [1, 2, 5]
  assert best.read_best(str(tmp_path)) == {
      "step": 5, "metric": metric, "value": values[4],
      "checkpoint": "best/ckpt-5"}


def test_a_run_keeps_and_exports_its_best_evaluation(small_mnist_dir,
                                                     tmp_path):
  model_dir, export_dir = tmp_path / "run", tmp_path / "export"
  runner.run(RunConfig(
      data=DataConfig(data_dir=small_mnist_dir, max_train_examples=512),
      model=ModelConfig(name="dense"),
      train=TrainConfig(model_dir=str(model_dir), batch_size=32,
                        train_steps=30, steps_per_loop=5, log_every=10,
                        eval_every=10, checkpoint_every=10,
                        keep_checkpoints=1, figures=False,
                        export_dir=str(export_dir), keep_best="elbo",
                        learning_rate=3e-2)), stream=io.StringIO())
  evals = summaries.read_metrics(str(model_dir))["eval"]
  best_step = max(evals, key=lambda step: evals[step]["elbo"])
  record = best.read_best(str(model_dir))
  assert record["step"] == best_step
  assert record["value"] == pytest.approx(evals[best_step]["elbo"])
  assert os.path.exists(record["checkpoint"] + ".index")
  assert record["export"] == str(export_dir / "best" / str(best_step))
  assert tf.saved_model.load(record["export"]).signatures["decode"]
  # The rolling checkpoints keep only the last one; the best survives it.
  assert sorted(n for n in os.listdir(model_dir) if n.endswith(".index")) == [
      "ckpt-30.index"]
  if best_step == 30:  # Then its weights are the final checkpoint's.
    final = tf.train.load_checkpoint(str(model_dir / "ckpt-30"))
    kept = tf.train.load_checkpoint(record["checkpoint"])
    for name in final.get_variable_to_shape_map():
      if name.startswith(("encoder", "decoder")):
        np.testing.assert_array_equal(final.get_tensor(name),
                                      kept.get_tensor(name))
  assert sorted(os.listdir(export_dir)) == ["30", "best"]
  json.loads((model_dir / "best" / "best.json").read_text())


def test_keep_best_nll_needs_the_nll(tmp_path):
  result = run_in_process(f"--model_dir={tmp_path}", "--keep_best=nll")
  assert result.returncode == 2
  assert_one_line_error(result, "--keep_best=nll needs --eval_nll_samples")
