"""`--keep_best`: the checkpoint (and export) of the best evaluation so far.

After each evaluation, a test ELBO higher (or an NLL lower) than any before
is saved into `<model_dir>/best/` beside the rolling checkpoints (which
`--keep_checkpoints` may delete), with `best.json` saying its step, metric,
value and path; with `--export_dir` it is also exported, as
`<export_dir>/best/<step>/`. `best.json` is written last and atomically and
names a checkpoint that is kept, so a kill at any point leaves a record that
restores; a resumed run reads it and keeps only what beats it.
"""

from __future__ import annotations

import json
from typing import Callable, Optional

from engine.io import checkpoints
from engine.io import files
from engine.train.actions import Say

BEST_JSON = "best.json"
# What each metric's better value is.
HIGHER_IS_BETTER = {"elbo": True, "nll": False}


def read_best(model_dir: str) -> Optional[dict]:
  """The best record of a run directory (None: nothing kept yet)."""
  path = files.join(model_dir, checkpoints.BEST_DIR, BEST_JSON)
  if not files.gfile.exists(path):
    return None
  return json.loads(files.read_text(path))


class KeepBest:
  """An eval action: keeps the best evaluation's weights.

  Args:
    metric: `elbo` or `nll`.
    checkpointer: The run's `checkpoints.Checkpointer`.
    write_dir: This worker's run directory (the chief's `--model_dir`).
    export: Called with the step to export the weights, if exporting.
    say: Where the news goes.
  """

  def __init__(self, metric: str, checkpointer: checkpoints.Checkpointer,
               write_dir: str, export: Optional[Callable[[int], str]],
               say: Say):
    self.metric, self.checkpointer = metric, checkpointer
    self.write_dir, self.export, self.say = write_dir, export, say
    self.best = read_best(write_dir)

  def better(self, value: float) -> bool:
    if self.best is None:
      return True
    if HIGHER_IS_BETTER[self.metric]:
      return value > self.best["value"]
    return value < self.best["value"]

  def __call__(self, step: int, metrics: dict) -> None:
    value = float(metrics[self.metric])
    if not self.better(value) or (self.best and self.best["step"] == step):
      return
    record = {"step": step, "metric": self.metric, "value": value,
              "checkpoint": self.checkpointer.save_best(step)}
    if self.export is not None:
      record["export"] = self.export(step)
    files.gfile.makedirs(files.join(self.write_dir, checkpoints.BEST_DIR))
    files.write_atomically(
        files.join(self.write_dir, checkpoints.BEST_DIR, BEST_JSON),
        json.dumps(record, indent=2))
    previous = ("" if self.best is None else
                f" (was {self.best['value']:.2f} at step {self.best['step']})")
    self.best = record
    self.say(f"best test {self.metric} so far: {value:.2f} at step {step}"
             f"{previous}, kept in {record['checkpoint']}")
