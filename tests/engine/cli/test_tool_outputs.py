"""Tools that write: a read-only run directory is one line before any work,
and a tool writing into a run directory that a run holds is refused, while
the same tool writing elsewhere works."""

import os
import shlex
import subprocess
import sys

import pytest

from engine.io import run_lock
from tests.helpers import REPO_ROOT
from tests.helpers import run_tool_in_process
from tests.helpers import assert_one_line_error, run_in_process
from tests.engine.io.mounts import needs_mounts

# One worker runs the module's tests, and trains `trained` once for them.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("tool_outputs")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_mnist_dir):
  """A finished run for the tools to read. Only its directory matters: it
  trains in this process, without XLA."""
  model_dir = tmp_path_factory.mktemp("tool_outputs") / "run"
  result = run_in_process(f"--data_dir={small_mnist_dir}", "--model=dense",
                          "--train_steps=10", "--steps_per_loop=10",
                          "--batch_size=32", "--nofigures",
                          "--nojit_compile", f"--model_dir={model_dir}")
  assert result.returncode == 0, result.stderr[-2000:]
  return model_dir


def _read_only(run_dir, view, *command):
  """Runs the tool with `view` a read-only bind mount of `run_dir`."""
  script = (f"mkdir -p {shlex.quote(str(view))} && mount --bind "
            f"{shlex.quote(str(run_dir))} {shlex.quote(str(view))} && "
            f"mount -o remount,bind,ro {shlex.quote(str(view))} && exec "
            + " ".join(shlex.quote(c) for c in
                       [sys.executable, "-m", "engine.main", *command]))
  return subprocess.run(
      ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT), check=False)


@needs_mounts
@pytest.mark.parametrize("tool,flag", [("evaluate", "--model_dir"),
                                       ("plot", "--output_dir")])
def test_a_read_only_run_dir_is_one_line_before_the_work(trained, tmp_path,
                                                         tool, flag):
  view = tmp_path / "ro"
  result = _read_only(trained, view, tool, f"--model_dir={view}",
                      "--eval_nll_samples=2" if tool == "evaluate"
                      else "--seed=0")
  assert_one_line_error(result, flag, "Read-only file system")
  # Nothing of the evaluation ran: no results table was printed.
  assert "NLL" not in result.stdout and not result.stdout.strip(), (
      result.stdout)


def test_a_tool_writing_into_a_held_run_dir_is_refused(trained, tmp_path):
  lock = run_lock.acquire(str(trained), what="a training run")
  try:
    # The tools' answers, from this process (whose lock is as foreign to
    # them as another's: test_run_lock).
    for tool in ("plot", "export"):
      assert_one_line_error(run_tool_in_process(tool,
                                                f"--model_dir={trained}"),
                            f"--model_dir={trained}: in use by pid "
                            f"{os.getpid()}", "(a training run, since")
    # Writing elsewhere, the same tools are readers and work.
    plot = run_tool_in_process("plot", f"--model_dir={trained}",
                               f"--output_dir={tmp_path}/figures")
    assert plot.returncode == 0, plot.stderr[-2000:]
    export = run_tool_in_process("export", f"--model_dir={trained}",
                                 f"--export_dir={tmp_path}/export")
    assert export.returncode == 0, export.stderr[-2000:]
    assert os.listdir(tmp_path / "export") == ["10"]
  finally:
    lock.release()
