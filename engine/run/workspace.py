"""Where a run's process writes, and its hold on the run directory."""

from __future__ import annotations

import os

import tensorflow as tf

from engine.devices import strategies
from engine.io import files
from engine.io import run_lock
from engine.run import preflight


class Workspace:
  """Where this process writes, and its hold on the run directory.

  The chief writes the model directory and holds its lock (`run_lock`: one
  writer per run directory) until the run ends (`with workspace:`) or the
  process does. Other workers write a scratch directory (checkpoints must be
  written by every worker, since saving mirrored variables is collective),
  marked as the engine's when made and removed when the run ends, with its
  parent once empty; an unmarked directory there is never removed.
  """

  SCRATCH_MARKER = ".vae-engine-scratch"

  def __init__(self, model_dir: str, role: strategies.TaskRole):
    self.model_dir = model_dir
    self.is_chief = role.is_chief
    self.write_dir = model_dir if role.is_chief else role.scratch_dir(
        model_dir)
    preflight.writable_directory("model_dir", self.write_dir)
    self.lock = None
    if self.is_chief:
      self.lock = run_lock.acquire(model_dir)
    else:
      files.create_marker(files.join(self.write_dir, self.SCRATCH_MARKER))

  def __enter__(self) -> "Workspace":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Releases the run directory (the chief) or removes the scratch."""
    if self.is_chief:
      if self.lock is not None:
        self.lock.release()
      return
    if not files.gfile.exists(files.join(self.write_dir,
                                         self.SCRATCH_MARKER)):
      return
    files.remove_tree(self.write_dir)
    try:  # The last one out removes the scratch directory's parent.
      scratch = os.path.dirname(self.write_dir)
      if not files.gfile.listdir(scratch):
        files.remove_tree(scratch)
    except tf.errors.OpError:
      pass
