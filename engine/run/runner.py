"""One training run, end to end.

`run(config)` = `build.build(config)` (the run, restored from the latest
checkpoint), then `train_evaluate_export(run)`: the controller trains to the
last step, checkpointing and evaluating on the way, and at completion saves,
evaluates and hands the end to the end actions (sample scores, figures,
export, `<model_dir>/result.json`).
"""

from __future__ import annotations

import sys
from typing import Optional, TextIO

from engine.config import RunConfig
from engine.run import build as build_lib
from engine.run.build import Run
from engine.run.finish import RunResult


def train_evaluate_export(run: Run,
                          stream: Optional[TextIO] = None) -> RunResult:
  """Drives a built run to its end (see `run`).

  Args:
    run: The built run.
    stream: Where it prints, if not where it was built to.
  """
  if stream is not None:
    run.console.stream = stream
  if run.resumed_from:
    run.console.say(f"resumed from {run.resumed_from} at step "
                    f"{run.trainer.step}")
  if run.initialized_from:
    run.console.say(f"initialized from {run.initialized_from} (its weights; "
                    "a new run from step 0)")
  run.console.say(run.start_line)
  run.controller.train_and_evaluate()
  run.writer.flush()
  return run.result_writer.result


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
  built = build_lib.build(config, stream, extra_actions)
  with built.workspace:
    return train_evaluate_export(built)
