"""tools/benchmark.py measures every variant on real data (tiny settings)."""

import os
import re
import sys

import pytest

from engine.cli import benchmark
from engine.cli import roofline
from tests.helpers import REPO_ROOT
from tests.helpers import run_tool_in_process

pytestmark = pytest.mark.e2e


def test_matmul_peak_is_measured():
  assert roofline.matmul_peak_flops(size=256, repeats=2) > 1e8


def test_paired_median_takes_each_rounds_ratio():
  assert benchmark.paired_median([10, 40, 90], [5, 10, 30]) == 3.0


def test_every_variant_is_timed_in_alternating_rounds_per_precision(
    small_mnist_dir, tmp_path):
  """The tool as users run it, at tiny sizes: every variant of every asked
  precision in the same rounds (the training set read from its shards too),
  the rounds sized and repeated as its flags say, FLOPs counted, and the
  large batch's share of the matmul peak."""
  import json
  import subprocess

  shards = str(tmp_path / "shards")
  converted = run_tool_in_process("convert_dataset",
                                  f"--data_dir={small_mnist_dir}",
                                  f"--output_dir={shards}")
  assert converted.returncode == 0, converted.stderr
  out = tmp_path / "b.json"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"),
       f"--data_dir={small_mnist_dir}", "--models=dense", "--batch_size=32",
       "--steps=400", "--rounds=1", "--min_seconds=2", "--round_seconds=0.05",
       "--large_batch_size=256", "--precisions=float32,auto",
       f"--shards_dir={shards}",
       f"--json_out={out}"], capture_output=True, text=True, cwd=REPO_ROOT,
      timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "dense: auto precision: " in result.stdout
  assert "retracing" not in result.stdout + result.stderr
  assert "deprecated" not in result.stdout + result.stderr
  assert "tuned (a')" in result.stdout and "defaults" in result.stdout
  report = json.loads(out.read_text())
  rows = report["models"]["dense"]
  assert set(rows) == {"float32", "auto"}
  for row in rows.values():
    rounds = row["rounds"]
    assert set(rounds) == {"fit", "fit_tuned", "engine", "defaults", "best",
                           "best_xla", "synthetic", "synthetic_xla", "shards"}
    assert row["ratio_shards_over_memory"] > 0
    assert all(r and min(r) > 0 for r in rounds.values())
    # --min_seconds adds rounds, every variant in every round ...
    counts = {len(r) for r in rounds.values()}
    assert len(counts) == 1 and counts.pop() > 1
    # ... of steps sized down to about --round_seconds for the slowest.
    assert 10 <= row["steps_per_round"] < 400
    assert row["ratio_defaults_over_tuned_fit"] > 0
    # Dense VAE: ~0.94 MFLOP forward per example; backward about twice that.
    assert 2e6 < row["flops_per_example"] < 4e6
  # `auto` is timed once with what it picked, if that was asked too.
  picked = re.search(r"dense +auto=(\w+)", result.stdout).group(1)
  assert (rows["auto"]["rounds"] == rows["float32"]["rounds"]) == (
      picked == "float32")
  large = report["dense_large_batch"]
  assert large["batch_size"] == 256 and len(large["rounds"]) == 1
  assert large["examples_per_sec"] > 0
  assert 0 < large["fraction_of_peak"] < 2


def test_an_unknown_precision_is_a_one_line_error(tmp_path):
  import subprocess
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "tools", "benchmark.py"),
       "--precisions=float32,half"], capture_output=True, text=True,
      cwd=REPO_ROOT, timeout=300)
  assert result.returncode == 2
  assert "error: --precisions: unknown policy 'half'" in result.stderr
