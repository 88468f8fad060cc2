"""Small and read-only file systems for tests, without root on the host.

`run_with_mounts` runs a command in a new user and mount namespace
(`unshare --user --map-root-user --mount`) where tmpfs file systems of a
given size, optionally read-only, are mounted over test directories; the
host's mounts are untouched and the mounts vanish with the command.
"""

import os
import shlex
import shutil
import subprocess

import pytest

from tests.helpers import REPO_ROOT


def _can_unshare() -> bool:
  if not shutil.which("unshare"):
    return False
  probe = subprocess.run(
      ["unshare", "--user", "--map-root-user", "--mount", "true"],
      capture_output=True, check=False)
  return probe.returncode == 0


CAN_MOUNT = _can_unshare()
needs_mounts = pytest.mark.skipif(
    not CAN_MOUNT, reason="needs user namespaces (unshare) for tmpfs mounts")


def run_with_mounts(command: list[str], mounts: dict, timeout: float = 600,
                    env=None) -> subprocess.CompletedProcess:
  """Runs `command` with `mounts` = {directory: (size, read_only)} mounted
  as fresh tmpfs file systems (created empty; `size` as mount(8) takes it,
  e.g. "2m")."""
  steps = []
  for directory, (size, read_only) in mounts.items():
    os.makedirs(directory, exist_ok=True)
    steps.append(f"mount -t tmpfs -o size={size} tmpfs "
                 f"{shlex.quote(str(directory))}")
    if read_only:
      steps.append(f"mount -o remount,ro {shlex.quote(str(directory))}")
  script = " && ".join(steps) + ' && exec "$@"'
  env = dict(env if env is not None else os.environ, PYTHONPATH=REPO_ROOT)
  return subprocess.run(
      ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script,
       "sh", *command], capture_output=True, text=True, cwd=REPO_ROOT,
      env=env, timeout=timeout, check=False)
