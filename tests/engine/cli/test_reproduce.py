"""`vae-engine reproduce iwae_table1`: rows trained under their presets into
one directory, resumed where they stopped, their NLL beside the paper's."""

import json

from tests.engine.test_main import assert_one_line_error, run_cli


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
    # 30 steps of 20 over 2,048 images.
    assert row["passes"] == round(30 * 20 / 2048, 1)
  assert rows["vae_k1"]["paper_nll"] == 86.76
  assert rows["vae2_k1"]["paper_nll"] == 85.33
  assert "active_units_z2" in rows["vae2_k1"]
  markdown = (tmp_path / "table.md").read_text()
  assert "| vae_k1 | 1 | VAE, k=1 | 86.76 |" in markdown
  assert "partial: 0.3 of 3280 passes" in markdown

  # Run again: each row continues from its model dir.
  second = run_cli(*common, "--train_steps=50")
  assert second.returncode == 0, second.stderr[-3000:]
  assert second.stdout.count("resumed from") == 2
  status = run_cli("reproduce", "iwae_table1", f"--root={tmp_path}",
                   "--status")
  assert status.returncode == 0, status.stderr[-3000:]
  rows = {row["row"]: row for row in json.loads(
      (tmp_path / "table.json").read_text())["rows"]}
  assert rows["vae_k1"]["step"] == rows["vae2_k1"]["step"] == 50
  assert rows["iwae_k50"]["step"] == 0  # Not started: all six rows shown.
  assert "| iwae2_k50 | 2 | IWAE, k=50 | 82.90 | — |" in status.stdout


def test_bad_table_or_rows_are_one_line(tmp_path):
  assert_one_line_error(run_cli("reproduce", "iwae_tabel1",
                                f"--root={tmp_path}"),
                        "name one table, of iwae_table1 (got iwae_tabel1)")
  assert_one_line_error(run_cli("reproduce", "iwae_table1",
                                f"--root={tmp_path}", "--rows=vae3"),
                        "--rows: vae3 not rows of iwae_table1")
  assert_one_line_error(run_cli("reproduce", "iwae_table1",
                                f"--root={tmp_path}"),
                        "--data_dir: needed to train")
