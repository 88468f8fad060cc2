"""metrics.jsonl as the figures and tools read it, and TensorBoard's view of
the runs (engine.io.summaries)."""

import json
import os

import pytest

from engine.viz import plots
from engine.io import summaries


def test_records_of_one_step_merge_and_later_values_win(tmp_path):
  lines = [{"split": "eval", "step": 40, "elbo": -150.0, "kl": 3.0},
           # The sample scores that follow the evaluation of the same step.
           {"split": "eval", "step": 40, "classifier_frechet_distance": 9.0},
           # A resumed run logging step 40 again.
           {"split": "eval", "step": 40, "elbo": -149.0},
           {"split": "train", "step": 40, "loss": 151.0}]
  path = os.path.join(tmp_path, summaries.METRICS_FILE)
  with open(path, "w") as f:
    f.write("\n".join(json.dumps(line) for line in lines) + "\n{cut sho")
  metrics = summaries.read_metrics(str(tmp_path))
  assert metrics["eval"][40] == {"elbo": -149.0, "kl": 3.0,
                                 "classifier_frechet_distance": 9.0}
  assert metrics["train"] == {40: {"loss": 151.0}}


def test_loss_curves_skip_eval_steps_without_an_elbo(tmp_path):
  """A step logged with sample scores only (no ELBO) is not plotted."""
  path = plots.plot_loss_curves(
      {"train": {10: {"loss": 200.0}, 20: {"loss": 180.0}},
       "eval": {20: {"elbo": -170.0}, 30: {"sample_class_entropy": 2.0}}},
      str(tmp_path / "loss.png"))
  assert os.path.getsize(path) > 1000


def _post(url, body):
  import urllib.request
  request = urllib.request.Request(
      url, data=json.dumps(body).encode(),
      headers={"Content-Type": "application/json"})
  with urllib.request.urlopen(request, timeout=10) as response:
    return json.loads(response.read())


@pytest.mark.e2e
def test_tensorboard_lists_every_run_as_an_hparams_row(small_mnist_dir,
                                                       tmp_path):
  """Two runs under one parent; a real TensorBoard on 127.0.0.1 shows both
  in its hparams table, with their settings and final test ELBO."""
  import io
  import subprocess
  import sys
  import time

  from engine.cli import launch_local
  from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
  from engine.run import runner

  results = {}
  for name, rate in (("slow", 1e-4), ("fast", 3e-3)):
    results[name] = runner.run(RunConfig(
        data=DataConfig(data_dir=small_mnist_dir, max_train_examples=256),
        model=ModelConfig(name="dense"),
        train=TrainConfig(model_dir=str(tmp_path / name), batch_size=32,
                          train_steps=4, steps_per_loop=2, log_every=2,
                          checkpoint_every=0, figures=False,
                          learning_rate=rate,
                          # Runs made to have summaries to show: how their
                          # steps are compiled is not what is tested.
                          jit_compile=False)), stream=io.StringIO())
  port = launch_local.free_ports(1)[0]
  board = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", f"--logdir={tmp_path}",
       "--host=127.0.0.1", f"--port={port}", "--reload_interval=1"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    url = f"http://127.0.0.1:{port}/data/plugin/hparams/session_groups"
    request = {"experimentName": "", "startIndex": 0, "sliceSize": 10,
               "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                                   "STATUS_FAILURE", "STATUS_RUNNING"],
               "colParams": [{"hparam": "learning_rate",
                              "includeInResult": True},
                             {"hparam": "model", "includeInResult": True},
                             {"metric": {"group": "eval", "tag": "elbo"},
                              "includeInResult": True}]}
    deadline, groups = time.monotonic() + 120, []
    while time.monotonic() < deadline:
      try:
        groups = _post(url, request)["sessionGroups"]
        if len(groups) == 2 and all(g["metricValues"] for g in groups):
          break
      except OSError:
        pass  # Not listening yet.
      time.sleep(1)
  finally:
    board.terminate()
    board.wait(timeout=30)
  rows = {group["name"]: group for group in groups}
  assert set(rows) == {"slow", "fast"}, groups
  for name, rate in (("slow", 1e-4), ("fast", 3e-3)):
    assert rows[name]["hparams"]["learning_rate"] == pytest.approx(rate)
    assert rows[name]["hparams"]["model"] == "dense"
    elbo = [m["value"] for m in rows[name]["metricValues"]
            if m["name"] == {"group": "eval", "tag": "elbo"}]
    assert elbo == [pytest.approx(results[name].test_metrics["elbo"],
                                  rel=1e-6)]
