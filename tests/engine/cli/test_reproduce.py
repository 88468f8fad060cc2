"""`vae-engine reproduce iwae_table1`: rows trained under their presets into
one directory, resumed where they stopped, their NLL beside the paper's."""

import json

import pytest

from tests.helpers import assert_one_line_error, run_cli
from tests.helpers import run_tool_in_process

pytestmark = pytest.mark.e2e


def test_rows_train_resume_and_print_the_table(small_mnist_dir, tmp_path):
  common = ("reproduce", "iwae_table1", f"--root={tmp_path}",
            "--rows=vae_k1,vae2_k1", f"--data_dir={small_mnist_dir}",
            "--eval_nll_samples=5", "--eval_batch_size=128")
  first = run_cli(*common, "--train_steps=30")
  assert first.returncode == 0, first.stderr[-3000:]
  assert "--preset=iwae_vae" in first.stdout
  assert "--preset=iwae2_vae" in first.stdout
  table = json.loads((tmp_path / "table.json").read_text())
  rows = {row["row"]: row for row in table["rows"]}
  assert sorted(rows) == ["vae2_k1", "vae_k1"]
  for row in rows.values():
    assert row["step"] == 30 and not row["finished"]
    assert row["nll_samples"] == 5 and row["nll"] < -row["elbo"] + 1.0
    # 30 steps of 20 over 2,048 images: 102 full batches a pass.
    assert row["passes"] == round(30 / 102, 1)
  assert rows["vae_k1"]["paper_nll"] == 86.76
  assert rows["vae2_k1"]["paper_nll"] == 85.33
  assert "active_units_z2" in rows["vae2_k1"]
  markdown = (tmp_path / "table.md").read_text()
  assert "| vae_k1 | 1 | VAE, k=1 | 86.76 |" in markdown
  assert "partial: 0.3 of 3280 passes" in markdown

  # The table of what is on disk, training nothing. (A row continuing from
  # its model dir: test_iwae_rows_resume_after_a_kill_mid_row.)
  status = run_tool_in_process("reproduce", "iwae_table1",
                               f"--root={tmp_path}", "--status")
  assert status.returncode == 0, status.stderr[-3000:]
  assert "resumed from" not in status.stdout
  rows = {row["row"]: row for row in json.loads(
      (tmp_path / "table.json").read_text())["rows"]}
  assert rows["vae_k1"]["step"] == rows["vae2_k1"]["step"] == 30
  assert rows["iwae_k50"]["step"] == 0  # Not started: all six rows shown.
  assert "| iwae2_k50 | 2 | IWAE, k=50 | 82.90 | — |" in status.stdout


def test_bad_table_or_rows_are_one_line(tmp_path):
  # As a process once (the command's own start); the rest from this one.
  assert_one_line_error(run_cli("reproduce", "iwae_tabel1",
                                f"--root={tmp_path}"),
                        "name one table, of iwae_table1 (got iwae_tabel1)")
  assert_one_line_error(run_tool_in_process("reproduce", "iwae_table1",
                                            f"--root={tmp_path}",
                                            "--rows=vae3"),
                        "--rows: vae3 not rows of iwae_table1")
  assert_one_line_error(run_tool_in_process("reproduce", "iwae_table1",
                                            f"--root={tmp_path}"),
                        "--data_dir: needed to train")


def test_a_row_at_the_protocols_last_step_is_done(tmp_path):
  """Finished means the engine's own last step: 3,280 passes of full
  batches (2,048 images at batch 20: 102 steps a pass, not 102.4)."""
  row = tmp_path / "vae_k1"
  row.mkdir()
  (row / "config.json").write_text(json.dumps({"train": {"batch_size": 20}}))
  (row / "data.json").write_text(json.dumps({"train_examples": 2048}))
  last = 3280 * (2048 // 20)
  (row / "result.json").write_text(json.dumps({
      "final_step": last, "test_metrics": {"elbo": -90.0,
                                           "active_units": 21}}))
  (row / "nll.json").write_text(json.dumps({
      "step": last, "nll": 87.01, "nll_stderr": 0.24, "num_samples": 5000}))
  status = run_tool_in_process("reproduce", "iwae_table1",
                               f"--root={tmp_path}", "--status",
                               "--rows=vae_k1")
  assert status.returncode == 0, status.stderr[-3000:]
  assert ("| vae_k1 | 1 | VAE, k=1 | 86.76 | 87.01 ± 0.24 (5000) | -90.00 "
          "| 21 | 3280 | 0.00 | done |") in status.stdout


def test_iwae_rows_resume_after_a_kill_mid_row(small_mnist_dir, tmp_path):
  """The IWAE rows of both depths; the first killed (-9, with its child) once
  its first checkpoint is down, then resumed from it by the same command."""
  import os
  import signal
  import subprocess
  import sys
  import time

  from tests.helpers import REPO_ROOT

  common = ["reproduce", "iwae_table1", f"--root={tmp_path}",
            "--rows=iwae_k5,iwae2_k5", f"--data_dir={small_mnist_dir}",
            "--eval_nll_samples=5", "--eval_batch_size=128",
            "--train_steps=3500"]  # The presets checkpoint every 3,000.
  killed = subprocess.Popen(
      [sys.executable, "-m", "engine.main", *common], cwd=REPO_ROOT,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT), start_new_session=True,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  first_checkpoint = tmp_path / "iwae_k5" / "ckpt-3000.index"
  deadline = time.monotonic() + 400
  while not first_checkpoint.exists():
    assert killed.poll() is None, killed.stderr.read().decode()[-3000:]
    assert time.monotonic() < deadline, "no checkpoint at step 3000"
    time.sleep(0.2)
  os.killpg(killed.pid, signal.SIGKILL)
  killed.wait()
  assert not (tmp_path / "iwae_k5" / "result.json").exists()  # Mid-row.

  resumed = run_cli(*common)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stdout and "at step 3000" in resumed.stdout
  assert "--preset=iwae_iwae5" in resumed.stdout
  assert "--preset=iwae2_iwae5" in resumed.stdout
  rows = {row["row"]: row for row in json.loads(
      (tmp_path / "table.json").read_text())["rows"]}
  for name in ("iwae_k5", "iwae2_k5"):
    assert rows[name]["step"] == 3500 and not rows[name]["finished"]
    assert rows[name]["nll_samples"] == 5
  assert rows["iwae_k5"]["paper_nll"] == 85.54
  assert rows["iwae2_k5"]["paper_nll"] == 83.89
  markdown = (tmp_path / "table.md").read_text()
  assert "| iwae_k5 | 1 | IWAE, k=5 | 85.54 |" in markdown
  assert "| iwae2_k5 | 2 | IWAE, k=5 | 83.89 |" in markdown
  assert "partial: 34.3 of 3280 passes" in markdown
