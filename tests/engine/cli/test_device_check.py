"""tools/device_check.py in its reduced CPU mode (the GPU mode's code path)."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


from engine.cli import device_check  # noqa: E402


@pytest.mark.slow
def test_cpu_mode_measures_every_variant_and_checks_correctness(tmp_path):
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
                       * len(plan["policies"]) * 2
                       * len(plan["steps_per_loop"]))
  assert {(r["policy"], r["xla"], r["steps_per_loop"]) for r in rows} == {
      (p, x, s) for p in plan["policies"] for x in (False, True)
      for s in plan["steps_per_loop"]}
  for row in rows:
    assert row["examples_per_sec"] > 0 and row["fit_examples_per_sec"] > 0
    assert 0 < row["fraction_of_peak"] < 2, row
  correctness = report["correctness"]
  assert correctness["devices"] == "2 logical CPUs"
  assert device_check.correctness_ok(correctness)
  assert set(correctness["mirrored"]) == set(correctness["resume"]) == {
      "dense", "conv"}
  for row in correctness["resume"].values():
    assert row["resumed_from"].endswith("ckpt-8")


def test_the_gpu_mode_measures_what_the_issue_asks():
  plan = device_check.sizes(cpu_mode=False)
  assert plan["batch_sizes"] == [128, 1024]
  assert set(plan["policies"]) == {"float32", "mixed_float16",
                                   "mixed_bfloat16"}
  assert plan["steps_per_loop"] == [1, 100]


def test_a_failed_check_is_reported():
  assert not device_check.correctness_ok({})
  assert not device_check.correctness_ok(
      {"mirrored": {"dense": {"ok": True}}, "resume": {"dense": {"ok": False}}})
  assert device_check.correctness_ok(
      {"mirrored": {"dense": {"ok": True}}, "resume": {"dense": {"ok": True}}})
