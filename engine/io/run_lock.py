"""One writer per run directory: an advisory lock held for a process's life.

A training run (the chief of a job) and every tool that writes into a run
directory take `<model_dir>/.vae-engine.lock` with `flock` before they write
anything there. The kernel releases the lock when the process ends however it
ends, so a `kill -9` never leaves a stale lock: the next run starts at once.
A second writer is refused with one line naming the holder (pid, host, what it
is and since when), read from the lock file, which the holder writes once it
holds the lock. Readers (`evaluate`, `plot` or `export` writing elsewhere) take
no lock and work while a run trains.

The lock file is never removed: removing a lock file that another process may
be about to lock would let two processes hold "the" lock at once.

Only local directories can be locked (`flock` is a local-kernel or NFS lock);
on other file systems (`gs://`, `ram://`) `acquire` returns None and nothing
is held.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
import sys
from typing import Optional

from engine.errors import UserError, quoted, reason
from engine.io import files

LOCK_FILE = ".vae-engine.lock"

class RunLock:
  """A held lock on one directory (its open file descriptor)."""

  def __init__(self, directory: str, descriptor: int):
    self.directory = directory
    self._descriptor = descriptor

  def __del__(self):
    # A run dropped without being closed (the Python API) lets go of its
    # directory with it.
    try:
      self.release()
    except (OSError, TypeError):  # At interpreter exit `os` may be gone.
      pass

  def release(self) -> None:
    """Releases the lock early (the process's exit does it otherwise)."""
    if self._descriptor >= 0:
      os.close(self._descriptor)  # Closing the descriptor drops the flock.
      self._descriptor = -1


def _holder(path: str) -> str:
  """Who holds the lock, from what the holder wrote into the file."""
  try:
    with open(path, encoding="utf-8") as f:
      about = json.loads(f.read() or "{}")
  except (OSError, ValueError):
    about = {}
  if not about:  # Locked a moment ago, not yet described.
    return "another process"
  return (f"pid {about.get('pid', '?')} on host {about.get('host', '?')} "
          f"({about.get('what', 'a vae-engine process')}, since "
          f"{about.get('since', '?')})")


def acquire(directory: str, flag: str = "model_dir",
            what: Optional[str] = None) -> Optional[RunLock]:
  """Takes the run directory's lock, or refuses.

  Args:
    directory: The run directory (created if needed).
    flag: The flag that named it, for the error.
    what: What holds it, for whoever is refused (default: this command).

  Returns:
    The held lock (held until released or the process exits, whether or
    not the caller keeps it: a second `acquire`, in this process or another,
    is refused), or None where the directory is not on a local file system.

  Raises:
    UserError: If another process holds it, naming that process; or if the
      lock file cannot be made (the OS's reason).
  """
  if not files.is_local(directory):
    return None
  path = os.path.join(directory, LOCK_FILE)
  try:
    os.makedirs(directory, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
  except OSError as e:
    raise UserError(f"--{flag}={quoted(directory)}: cannot create its lock "
                    f"file {LOCK_FILE} ({reason(e)}); pass a directory this "
                    "process can write") from None
  try:
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(descriptor)
    raise UserError(
        f"--{flag}={quoted(directory)}: in use by {_holder(path)}; one run "
        "writes a run directory at a time: wait for it to end, stop it, or "
        f"pass another --{flag}") from None
  except OSError as e:  # A file system without locks.
    os.close(descriptor)
    raise UserError(f"--{flag}={quoted(directory)}: cannot be locked "
                    f"({reason(e)}); use a directory on a local disk") from None
  about = json.dumps({
      "pid": os.getpid(), "host": socket.gethostname(),
      "what": what or " ".join(
          [os.path.basename(sys.argv[0]) or "python", *sys.argv[1:]])[:300],
      "since": datetime.datetime.now().astimezone().isoformat(
          timespec="seconds")})
  os.ftruncate(descriptor, 0)
  os.pwrite(descriptor, about.encode(), 0)
  return RunLock(directory, descriptor)


def acquire_if_inside(run_directory: str, output: str, flag: str,
                      what: str) -> Optional[RunLock]:
  """A tool's lock on a run directory it writes into: taken when `output`
  (a directory) lies inside `run_directory` (where it could clash with
  what the run writes), none when it goes elsewhere (a reader)."""
  if not (files.is_local(run_directory) and files.is_local(output)):
    return None
  run = os.path.realpath(run_directory)
  target = os.path.realpath(output)
  if target != run and not target.startswith(run + os.sep):
    return None
  return acquire(run_directory, flag, what)
