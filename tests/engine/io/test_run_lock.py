"""One writer per run directory: a second run is refused, a killed holder's
lock is gone at once, readers work while a run trains."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from engine.errors import UserError
from engine.io import run_lock
from tests.helpers import REPO_ROOT
from tests.helpers import assert_one_line_error, run_in_process
from tests.helpers import run_tool_in_process

_ACQUIRE = ("import sys; from engine.io import run_lock; "
            "from engine.errors import UserError\n"
            "try:\n  run_lock.acquire(sys.argv[1])\n"
            "except UserError as e:\n  print(e); sys.exit(2)\n"
            "print('held')")


def _engine(args, **kwargs):
  return subprocess.Popen(
      [sys.executable, "-u", "-m", "engine.main", *args],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT), **kwargs)


def _try_in_another_process(directory):
  return subprocess.run([sys.executable, "-c", _ACQUIRE, str(directory)],
                        capture_output=True, text=True, cwd=REPO_ROOT,
                        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                        timeout=60, check=False)


@pytest.mark.e2e
def test_a_held_lock_refuses_others_and_names_its_holder(tmp_path):
  lock = run_lock.acquire(str(tmp_path), what="a test")
  try:
    other = _try_in_another_process(tmp_path)
    assert other.returncode == 2, other.stdout + other.stderr
    assert f"in use by pid {os.getpid()} on host" in other.stdout
    assert "(a test, since" in other.stdout
    # A second hold in this very process is refused too (flock is per open
    # file), so two runs in one Python process cannot share a directory.
    with pytest.raises(UserError, match="in use by pid"):
      run_lock.acquire(str(tmp_path))
  finally:
    lock.release()
  assert _try_in_another_process(tmp_path).stdout.strip() == "held"
  assert os.path.exists(tmp_path / run_lock.LOCK_FILE)  # Never removed.


def test_other_file_systems_are_not_locked():
  assert run_lock.acquire("ram://no-locks-here") is None


def _args(small_mnist_dir, model_dir, seed, steps=200):
  # Without XLA's compile: the runs are here to hold a directory.
  return [f"--data_dir={small_mnist_dir}", "--model=dense", "--nojit_compile",
          f"--model_dir={model_dir}", f"--export_dir={model_dir}/export",
          f"--train_steps={steps}", "--checkpoint_every=20",
          "--steps_per_loop=10", "--batch_size=32", "--log_every=20",
          "--nofigures", f"--seed={seed}"]


@pytest.mark.slow
def test_two_runs_started_at_once_one_trains(small_mnist_dir, tmp_path):
  model_dir = tmp_path / "run"
  first = _engine(_args(small_mnist_dir, model_dir, seed=0))
  second = _engine(_args(small_mnist_dir, model_dir, seed=1))
  results = [(p, *p.communicate(timeout=600)) for p in (first, second)]
  statuses = sorted(p.returncode for p, _, _ in results)
  assert statuses == [0, 2], [(p.returncode, err[-2000:])
                              for p, _, err in results]
  winner = next(r for r in results if r[0].returncode == 0)
  loser = next(r for r in results if r[0].returncode == 2)
  assert_one_line_error(
      subprocess.CompletedProcess([], 2, loser[1], loser[2]),
      f"--model_dir={model_dir}: in use by pid {winner[0].pid}")
  # Everything in the directory is the winner's: its final weights, one
  # metrics line per logged step, its export.
  result = json.loads((model_dir / "result.json").read_text())
  assert result["weights_fingerprint"] in winner[1]
  steps = [json.loads(line)["step"] for line in
           (model_dir / "metrics.jsonl").read_text().splitlines()
           if json.loads(line).get("split") == "train"]
  assert steps == sorted(set(steps)), steps
  assert os.listdir(model_dir / "export") == ["200"]


@pytest.mark.slow
def test_a_killed_holder_lets_the_next_run_in_at_once(small_mnist_dir,
                                                      tmp_path):
  model_dir = tmp_path / "run"
  holder = _engine(_args(small_mnist_dir, model_dir, seed=0, steps=100_000))
  try:
    deadline = time.monotonic() + 300
    while not list(model_dir.glob("ckpt-*.index")):
      assert holder.poll() is None, holder.communicate()[1][-2000:]
      assert time.monotonic() < deadline
      time.sleep(0.2)
    # A reader works while the run trains: it takes no lock (the tool's
    # answer, given in this process).
    reader = run_tool_in_process(
        "evaluate", f"--model_dir={model_dir}", "--eval_nll_samples=2",
        "--max_test_examples=64", f"--output_json={tmp_path}/eval.json")
    assert reader.returncode == 0, reader.stderr[-2000:]
    # A writer does not (the engine's answer, given in this process).
    refused = run_in_process(
        *_args(small_mnist_dir, model_dir, seed=0, steps=100_000))
    assert_one_line_error(refused, f"in use by pid {holder.pid}")
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
  # The kernel dropped the lock with the process: the next run resumes.
  started = time.monotonic()
  other = _try_in_another_process(model_dir)
  assert other.stdout.strip() == "held", other.stdout + other.stderr
  assert time.monotonic() - started < 60
