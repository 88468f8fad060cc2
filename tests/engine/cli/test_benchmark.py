"""tools/benchmark.py measures every variant on real data (tiny settings)."""

import os
import sys

import pytest

from engine.cli import benchmark
from engine.cli import roofline
from engine.cli import variants
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_every_variant_is_measured_in_alternating_rounds_and_flops_counted(
    small_mnist_dir):
  from engine.config import DataConfig
  from engine.data import sources
  data = sources.load(DataConfig(data_dir=small_mnist_dir))
  rates, flops, steps = variants.measure_model(
      "dense", data, batch_size=32, steps=400, rounds=1, policy="float32",
      min_seconds=2.0, round_seconds=0.05)
  assert set(rates) == {"fit", "fit_tuned", "engine", "defaults", "best",
                        "best_xla", "synthetic", "synthetic_xla"}
  assert all(r and min(r) > 0 for r in rates.values())
  # --min_seconds adds rounds, every variant in every round ...
  counts = {len(r) for r in rates.values()}
  assert len(counts) == 1 and counts.pop() > 1
  # ... of steps sized down to about --round_seconds for the slowest.
  assert 10 <= steps < 400
  # Dense VAE: ~0.94 MFLOP forward per example; backward about twice that.
  assert 2e6 < flops < 4e6


def test_matmul_peak_is_measured():
  assert roofline.matmul_peak_flops(size=256, repeats=2) > 1e8


def test_large_batch_fraction_of_peak_is_measured(small_mnist_dir):
  from engine.config import DataConfig
  from engine.data import sources
  data = sources.load(DataConfig(data_dir=small_mnist_dir))
  rates, flops = variants.measure_large_batch("dense", data, batch_size=256,
                                               steps=4, rounds=1)
  assert len(rates) == 1 and rates[0] > 0
  assert 2e6 < flops < 4e6


def test_paired_median_takes_each_rounds_ratio():
  assert benchmark.paired_median([10, 40, 90], [5, 10, 30]) == 3.0


def test_precisions_are_put_side_by_side(small_mnist_dir, tmp_path):
  import json
  import subprocess
  out = tmp_path / "b.json"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"),
       f"--data_dir={small_mnist_dir}", "--models=dense", "--batch_size=32",
       "--steps=10", "--rounds=1", "--min_seconds=0", "--round_seconds=0",
       "--large_batch_size=0", "--precisions=float32,auto",
       f"--json_out={out}"], capture_output=True, text=True, cwd=REPO_ROOT,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "dense: auto precision: " in result.stdout
  assert "retracing" not in result.stdout + result.stderr
  assert "deprecated" not in result.stdout + result.stderr
  assert "tuned (a')" in result.stdout and "defaults" in result.stdout
  rows = json.loads(out.read_text())["models"]["dense"]
  assert set(rows) == {"float32", "auto"}
  for row in rows.values():
    for variant in ("best", "fit", "fit_tuned", "defaults"):
      assert row["examples_per_sec"][variant] > 0
    assert row["ratio_defaults_over_tuned_fit"] > 0


def test_an_unknown_precision_is_a_one_line_error(tmp_path):
  import subprocess
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"),
       "--precisions=float32,half"], capture_output=True, text=True,
      cwd=REPO_ROOT, timeout=300)
  assert result.returncode == 2
  assert "error: --precisions: unknown policy 'half'" in result.stderr
