"""SIGTERM at any moment ends a run with the `preempted` line and exit 143,
the last checkpoint intact: while it builds, during the final evaluation and
while the export is being written (the loop's own case is in
test_distribute)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.e2e


def _start(small_mnist_dir, model_dir, *extra):
  return subprocess.Popen(
      [sys.executable, "-u", "-m", "engine.main",
       f"--data_dir={small_mnist_dir}", "--model=dense",
       f"--model_dir={model_dir}", f"--export_dir={model_dir}/export",
       "--train_steps=40", "--checkpoint_every=20", "--steps_per_loop=10",
       "--batch_size=32", "--log_every=20", "--nofigures", *extra],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=REPO_ROOT))


def _wait_for(condition, process, timeout_s=300):
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert process.poll() is None, process.communicate()[1][-3000:]
    assert time.monotonic() < deadline, "the moment never came"
    time.sleep(0.005)


def _terminate(process):
  process.send_signal(signal.SIGTERM)
  _, err = process.communicate(timeout=120)
  lines = [line for line in err.splitlines() if line.strip()]
  return process.returncode, lines


def _assert_preempted(status, lines, fragment):
  assert status == 143, lines[-20:]
  assert "Traceback" not in "\n".join(lines), lines
  assert lines[-1].startswith("preempted (SIGTERM) "), lines[-5:]
  assert fragment in lines[-1], lines[-1]


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation(small_mnist_dir, tmp_path):
  model_dir = tmp_path / "run"
  # A slow final evaluation: the importance-weighted NLL with many samples
  # (without XLA, slower still; the moment is after training).
  process = _start(small_mnist_dir, model_dir, "--eval_nll_samples=2000",
                   "--nojit_compile")
  state = model_dir / "checkpoint"
  # The final save is complete once the state file names it.
  _wait_for(lambda: state.exists() and 'ckpt-40"' in state.read_text(),
            process)
  status, lines = _terminate(process)
  _assert_preempted(status, lines, "before the run finished: the last "
                    f"checkpoint, {model_dir}/ckpt-40, is intact")
  assert not (model_dir / "result.json").exists()
  reader = tf.train.load_checkpoint(str(model_dir / "ckpt-40"))
  assert int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE")) == 40


@pytest.mark.slow
def test_sigterm_while_the_export_is_written(small_mnist_dir, tmp_path):
  model_dir = tmp_path / "run"
  export_dir = model_dir / "export"
  # Without XLA, in both runs: the moment is the export's, after training.
  process = _start(small_mnist_dir, model_dir, "--nojit_compile")
  _wait_for(lambda: export_dir.is_dir() and any(
      name.startswith(".tmp-") for name in os.listdir(export_dir)), process)
  status, lines = _terminate(process)
  _assert_preempted(status, lines, "the last checkpoint, "
                    f"{model_dir}/ckpt-40, is intact")
  # Nothing half-written is left that looks like an export.
  assert not [name for name in os.listdir(export_dir)
              if not name.startswith(".")], os.listdir(export_dir)
  # The re-run finishes the run: evaluation, export.
  rerun = _start(small_mnist_dir, model_dir, "--nojit_compile")
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-3000:]
  assert sorted(os.listdir(export_dir)) == ["40"]


def test_sigterm_while_the_run_is_built(small_mnist_dir, tmp_path):
  model_dir = tmp_path / "run"
  process = _start(small_mnist_dir, model_dir)
  # The lock is taken first thing in the build, before the data is loaded.
  _wait_for(lambda: (model_dir / ".vae-engine.lock").exists(), process)
  status, lines = _terminate(process)
  # Usually still building ("no checkpoint had been written"); on a fast
  # machine maybe training already: either way the one line and 143.
  _assert_preempted(status, lines, "re-run the same command to resume")
