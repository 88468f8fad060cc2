"""tools/device_check.py in its reduced CPU mode (the GPU mode's code path)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


from engine.cli import device_check  # noqa: E402


@pytest.mark.slow
def test_cpu_mode_measures_its_settings_and_checks_correctness(tmp_path):
  output = tmp_path / "check.json"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "tools", "device_check.py"),
       "--cpu_mode", f"--output={output}"], capture_output=True, text=True,
      cwd=REPO_ROOT, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  plan = device_check.sizes(cpu_mode=True)
  rows = report["speed"]["rows"]
  assert len(rows) == (len(plan["models"]) * len(plan["batch_sizes"])
                       * len(plan["settings"]))
  assert [(r["policy"], r["xla"], r["steps_per_loop"]) for r in rows] == (
      plan["settings"])
  for row in rows:
    assert row["examples_per_sec"] > 0 and row["fit_examples_per_sec"] > 0
    assert 0 < row["fraction_of_peak"] < 2, row
  correctness = report["correctness"]
  assert correctness["devices"] == "2 logical CPUs"
  assert device_check.correctness_ok(correctness)
  assert set(correctness["mirrored"]) == set(correctness["resume"]) == set(
      plan["models"])
  for row in correctness["resume"].values():
    assert row["resumed_from"].endswith("ckpt-8")


def test_the_gpu_mode_measures_what_the_issue_asks():
  plan = device_check.sizes(cpu_mode=False)
  assert plan["batch_sizes"] == [128, 1024]
  assert plan["models"] == ["dense", "conv"]
  policies = {"float32", "mixed_float16", "mixed_bfloat16"}
  assert set(plan["policies"]) == policies
  # Every policy with XLA off and on, at 1 and 100 steps a call.
  assert sorted(plan["settings"]) == sorted(
      (p, x, s) for p in policies for x in (False, True) for s in (1, 100))


def test_the_cpu_mode_runs_every_path_and_every_pair_of_settings():
  plan = device_check.sizes(cpu_mode=True)
  settings = plan["settings"]
  assert set(plan["policies"]) == {p for p, _, _ in settings}
  assert len(settings) < len(plan["policies"]) * 2 * 2  # Not the product.
  for i, j in ((0, 1), (0, 2), (1, 2)):
    pairs = [(s[i], s[j]) for s in settings]
    assert len(set(pairs)) == len(pairs) == 4, pairs


def test_a_failed_check_is_reported():
  assert not device_check.correctness_ok({})
  assert not device_check.correctness_ok(
      {"mirrored": {"dense": {"ok": True}}, "resume": {"dense": {"ok": False}}})
  assert device_check.correctness_ok(
      {"mirrored": {"dense": {"ok": True}}, "resume": {"dense": {"ok": True}}})
