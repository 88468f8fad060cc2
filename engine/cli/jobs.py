"""A launch of the engine that a tool watches and can kill: one process, or
the workers of a local `multi_worker_mirrored` job (`launch_local`: in a
private network namespace where only loopback exists, else with its
one-line warning; each worker is still a direct child), each read line by
line; and waiting for the moment to kill it (while steps run,
while a checkpoint or an export is being written)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Optional

from engine.cli import launch_local

# Where the `engine` package is (a clone, or site-packages): what a launched
# process puts on its import path.
PACKAGE_ROOT = launch_local.PACKAGE_ROOT


class Watcher:
  """Reads a child's output in a thread, noting when training is under way."""

  def __init__(self, process: subprocess.Popen, log, prefix: str = ""):
    self.training = threading.Event()
    self.lines: list[str] = []
    self._thread = threading.Thread(target=self._read,
                                    args=(process, log, prefix), daemon=True)
    self._thread.start()

  def _read(self, process, log, prefix):
    for line in process.stdout:
      self.lines.append(line)
      log.write(prefix + line)
      if line.startswith("step "):  # A progress line: steps are running.
        self.training.set()

  def join(self):
    self._thread.join(timeout=30)


class Job:
  """One launch of the run: a single engine process, or the workers of a
  local `multi_worker_mirrored` job (worker 0 is the chief)."""

  def __init__(self, args: list[str], model_dir: str, export_dir: str,
               workers: int, log):
    args = [*args, f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    if workers == 1:
      env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT)
      self.processes = [subprocess.Popen(
          [sys.executable, "-u", "-m", "engine.main", *args],
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
          env=env)]
    else:
      self.processes = launch_local.start_workers(workers, args,
                                                  stdout=subprocess.PIPE)
    self.watchers = [Watcher(p, log, f"[worker {i}] " if workers > 1
                              else "")
                     for i, p in enumerate(self.processes)]

  @property
  def chief(self) -> subprocess.Popen:
    return self.processes[0]

  @property
  def lines(self) -> list[str]:
    return self.watchers[0].lines

  def running(self) -> bool:
    return all(p.poll() is None for p in self.processes)

  def wait(self) -> int:
    """Waits for every process; the first non-zero status, else 0."""
    for p in self.processes:
      p.wait()
    for watcher in self.watchers:
      watcher.join()
    return next((p.returncode for p in self.processes if p.returncode), 0)

  def kill(self, victim: int, timeout_s: float) -> Optional[float]:
    """SIGKILLs one process; returns how long the others took to exit by
    themselves (None: they did not, within `timeout_s`; they are killed)."""
    self.processes[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    others = [p for i, p in enumerate(self.processes) if i != victim]
    while any(p.poll() is None for p in others):
      if time.monotonic() - killed_at > timeout_s:
        for p in others:
          if p.poll() is None:
            p.kill()
        self.wait()
        return None
      time.sleep(0.05)
    exited = time.monotonic() - killed_at
    self.wait()
    return exited


def wait_for_target(target, job, model_dir, export_dir, rng,
                     timeout_s=600.0) -> bool:
  """Blocks until the target moment; False if the run ended first."""
  deadline = time.monotonic() + timeout_s
  if target == "step":
    while not job.watchers[0].training.wait(0.05):
      if not job.running() or time.monotonic() > deadline:
        return False
    time.sleep(rng.uniform(0.0, 1.5))
    return job.running()
  if target == "checkpoint":
    directory, pattern = model_dir, lambda n: n.endswith("_temp")
  else:
    directory, pattern = export_dir, lambda n: n.startswith(".tmp-")
  # Leftovers of an earlier kill do not count: only a write happening now.
  stale = set(listing(directory))
  while job.running() and time.monotonic() < deadline:
    if any(pattern(n) and n not in stale for n in listing(directory)):
      return True
    time.sleep(0.001)
  return False


def listing(directory: str) -> list[str]:
  try:
    return os.listdir(directory)
  except FileNotFoundError:
    return []


# Written into every work directory chaos makes: one it may clear.
WORK_DIR_MARKER = ".vae-engine-chaos"


def fresh_work_dir(work_dir: str) -> None:
  """Empties a work directory this tool made before (its marker proves it);
  a directory that is not empty and not the tool's is refused, never
  deleted."""
  from engine.errors import UserError, quoted

  if os.path.isdir(work_dir) and os.listdir(work_dir):
    if not os.path.exists(os.path.join(work_dir, WORK_DIR_MARKER)):
      raise UserError(
          f"--work_dir={quoted(work_dir)}: not empty and not a work "
          f"directory of chaos (no {WORK_DIR_MARKER}); pass a new or empty "
          "directory (chaos deletes its work directory's contents)")
    for name in os.listdir(work_dir):
      path = os.path.join(work_dir, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
  os.makedirs(work_dir, exist_ok=True)
  with open(os.path.join(work_dir, WORK_DIR_MARKER), "w") as f:
    f.write("made by vae-engine chaos\n")
