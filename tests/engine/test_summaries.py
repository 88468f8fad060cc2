"""metrics.jsonl as the figures and tools read it (engine.io.summaries)."""

import json
import os

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
