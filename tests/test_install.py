"""Installed, not only cloned: the wheel `pip` builds holds the engine, its
tools (`vae-engine <tool>`) and its presets, and runs from a directory that
is not the clone, with nothing of the clone on the import path."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO_ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """The wheel installed into a directory of its own: (its bin/vae-engine,
  the environment that sees only it)."""
  root = tmp_path_factory.mktemp("install")
  built = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps",
       "--no-build-isolation", "-w", str(root / "wheel"), REPO_ROOT],
      capture_output=True, text=True, timeout=600)
  assert built.returncode == 0, built.stderr[-3000:]
  wheel, = (root / "wheel").glob("vae_engine-*.whl")
  target = root / "site"
  done = subprocess.run(
      [sys.executable, "-m", "pip", "install", "--no-deps", "--target",
       str(target), str(wheel)], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env["PYTHONPATH"] = str(target)
  return str(target / "bin" / "vae-engine"), env, target


def _run(installed, cwd, *args):
  script, env, _ = installed
  return subprocess.run([script, *args], capture_output=True, text=True,
                        cwd=str(cwd), env=env, timeout=900)


@pytest.mark.slow
def test_the_wheel_trains_evaluates_and_samples_away_from_the_clone(
    installed, small_mnist_dir, tmp_path):
  script, env, target = installed
  work = tmp_path / "elsewhere"
  work.mkdir()
  where = subprocess.run(
      [sys.executable, "-c", "import engine, flags, models; "
       "print(engine.__file__, flags.__file__, models.__file__)"],
      capture_output=True, text=True, cwd=str(work), env=env, check=True)
  assert all(path.startswith(str(target))
             for path in where.stdout.split()), where.stdout
  trained = _run(installed, work, "--preset=iwae_vae",
                 f"--data_dir={small_mnist_dir}", "--train_steps=20",
                 "--steps_per_loop=10", "--log_every=10", "--nofigures",
                 "--model_dir=run", "--export_dir=run/export")
  assert trained.returncode == 0, trained.stderr[-3000:]
  assert "training iwae_mlp (latent 50)" in trained.stdout  # The preset's.
  evaluated = _run(installed, work, "evaluate", "--model_dir=run",
                   "--eval_nll_samples=5", "--max_test_examples=100",
                   "--batch_size=50", "--output_json=eval.json")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  record = json.loads((work / "eval.json").read_text())
  assert record["examples"] == 100 and record["nll"] > 0
  sampled = _run(installed, work, "sample", "--saved_model=run/export/20",
                 "--num=8", "--output=samples/s")
  assert sampled.returncode == 0, sampled.stderr[-3000:]
  assert (work / "samples" / "s.npy").exists()
  assert (work / "samples" / "s.png").exists()


@pytest.mark.slow
def test_the_installed_command_names_its_tools_and_presets(installed,
                                                           tmp_path):
  helped = _run(installed, tmp_path, "--helpfull")
  assert "iwae_vae" in helped.stdout and "vae-engine <tool>" in helped.stdout
  helped = _run(installed, tmp_path, "evaluate", "--help")
  assert "Test-set ELBO, importance-weighted NLL" in helped.stdout
  for tool in ("evaluate", "sample", "plot", "export", "chaos",
               "launch_local", "benchmark"):
    result = _run(installed, tmp_path, tool, "--bogus")
    assert result.returncode == 2, (tool, result.stderr[-500:])
    assert "error: Unknown command line flag 'bogus'" in result.stderr, tool
