"""Where metrics go: TensorBoard event files and a JSON-lines log.

`<model_dir>/train` and `<model_dir>/eval` hold TensorBoard events (scalars
and image grids), `<model_dir>` itself the run's hparams;
`<model_dir>/metrics.jsonl` holds one JSON object per report
(`{"split": ..., "step": ..., <metric>: ...}`) for figures and tools.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from engine.io import files

METRICS_FILE = "metrics.jsonl"


class SummaryWriter:
  """Writes scalars and images for one run.

  Args:
    model_dir: The run's directory.
  """

  def __init__(self, model_dir: str):
    self._model_dir = model_dir
    self._writers = {
        split: tf.summary.create_file_writer(files.join(model_dir, split))
        for split in ("train", "eval")}

  def scalars(self, split: str, step: int, values: dict[str, float]) -> None:
    with self._writers[split].as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, value)
    record = {"split": split, "step": int(step)}
    record.update({k: float(v) for k, v in values.items()})
    files.append_line(files.join(self._model_dir, METRICS_FILE),
                      json.dumps(record))

  def images(self, split: str, step: int, name: str,
             grid: np.ndarray) -> None:
    """Writes one image grid, [rows, cols] (grey) or [rows, cols, 3]
    (colour), with values in [0, 1]."""
    if grid.ndim == 2:
      grid = grid[:, :, np.newaxis]
    with self._writers[split].as_default(step=step):
      tf.summary.image(name, grid[np.newaxis], step=step)

  def histogram(self, split: str, step: int, name: str,
                values: np.ndarray) -> None:
    """Writes a histogram of `values` (e.g. the KL of each latent unit)."""
    with self._writers[split].as_default(step=step):
      tf.summary.histogram(name, np.asarray(values, np.float32), step=step)

  def flush(self) -> None:
    for writer in self._writers.values():
      writer.flush()

  def hparams(self, values: dict) -> None:
    """Records the run's settings for TensorBoard's hparams plugin: with
    `tensorboard --logdir=PARENT` every run is a row, its metrics the
    latest `eval` and `train` scalars."""
    from tensorboard.plugins.hparams import api as hp

    writer = tf.summary.create_file_writer(self._model_dir)
    with writer.as_default(step=0):
      hp.hparams(values, trial_id=self._model_dir.rstrip("/").rsplit(
          "/", 1)[-1])
    writer.close()


def read_metrics(model_dir: str) -> dict[str, dict[int, dict[str, float]]]:
  """Reads `metrics.jsonl` as {split: {step: metrics}}.

  Records of one split and step are merged (an evaluation and the sample
  scores that follow it are two records); a resumed run may log a step twice
  (once before an interruption, once after resuming), and the later value
  of a metric wins.
  """
  path = files.join(model_dir, METRICS_FILE)
  result: dict[str, dict[int, dict[str, float]]] = {}
  if not files.gfile.exists(path):
    return result
  for line in files.read_text(path).splitlines():
    line = line.strip()
    if not line:
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue  # A line cut short by a kill.
    split, step = record.pop("split"), record.pop("step")
    result.setdefault(split, {}).setdefault(step, {}).update(record)
  return result
