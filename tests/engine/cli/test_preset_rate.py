"""`vae-engine preset_rate`: a preset's marginal rate and its limit."""

import json
import math
import os
import subprocess
import sys

import pytest

from engine.cli import preset_rate
from engine.cli import roofline
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.e2e


def _tool(*args):
  return subprocess.run(
      [sys.executable, "-m", "engine.main", "preset_rate", *args],
      capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT))


def test_the_marginal_rate_cancels_what_both_runs_pay(monkeypatch):
  # 5 s of start-up, compilation and evaluation in both runs, 2 ms a step.
  monkeypatch.setattr(preset_rate, "_run_seconds",
                      lambda flags, steps, env, dirs: 5.0 + 0.002 * steps)
  assert math.isclose(preset_rate.marginal_rate([], 15000, 3000, {}), 500.0)
  # Two runs at once in that time: twice the steps.
  assert math.isclose(preset_rate.marginal_rate([], 15000, 3000, {}, 2),
                      1000.0)
  # Noise larger than the steps in between: no rate, not a huge one.
  monkeypatch.setattr(preset_rate, "_run_seconds",
                      lambda flags, steps, env, dirs: 9.0 - steps * 1e-4)
  assert math.isnan(preset_rate.marginal_rate([], 15000, 3000, {}))


def test_times_the_preset_and_states_its_arithmetic_limit(small_mnist_dir,
                                                          tmp_path):
  out = tmp_path / "rate.json"
  result = _tool(f"--data_dir={small_mnist_dir}", "--long_steps=120",
                 "--short_steps=20", "--rounds=1",
                 "--variants=two_runs,compiled_loop",
                 "--extra_flags=--steps_per_loop=20 --log_every=20",
                 f"--json_out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  # iwae_mlp at batch 20: forward 784-200-200-(2x50) and 50-200-200-784
  # matmuls, twice that backward, less the input's own gradient.
  forward = 784 * 200 + 200 * 200 + 200 * 100 + 50 * 200 + 200 * 200 + 200 * 784
  matmul_flops = 20 * 2 * (3 * forward - 784 * 200)
  assert matmul_flops <= report["flops_per_step"] < 1.2 * matmul_flops
  assert report["steps_per_sec_limit"] == (report["matmul_peak_flops"]
                                           / report["flops_per_step"])
  # compiled_loop: this TensorFlow's XLA still takes the runtime's flag.
  assert set(report["variants"]) == {"two_runs", "compiled_loop"}
  assert "MFLOP per step" in result.stdout and "CPU:" in result.stdout


def test_an_unknown_variant_is_one_line():
  result = _tool("--variants=engine,fast")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: --variants: unknown fast")


def test_the_cpu_is_named_with_the_features_that_decide_its_speed(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: "
                     "fpu avx2 avx512f avx512_bf16 sse4_2\n\nprocessor\t: 1\n"
                     "model name\t: AMD EPYC\nflags\t\t: fpu avx2\n")
  assert roofline.cpu_model(str(cpuinfo)) == "AMD EPYC (avx512_bf16 avx512f avx2)"
  cpuinfo.write_text("model name\t: Intel Xeon\nflags\t\t: amx_tile amx_bf16 "
                     "avx512_bf16 avx512f avx2\n")
  assert roofline.cpu_model(str(cpuinfo)) == (
      "Intel Xeon (amx_tile amx_bf16 avx512_bf16 avx512f avx2)")
  assert roofline.cpu_model(str(tmp_path / "absent")) == "unknown"
