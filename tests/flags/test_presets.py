"""The shipped flag presets: they parse, and run on their fastest exact path."""

import os

import pytest

from engine.run import finish
from tests.helpers import REPO_ROOT
from tests.helpers import run_in_process

pytestmark = pytest.mark.e2e

_IWAE_PRESET = os.path.join(REPO_ROOT, "flags", "presets", "iwae_vae.flags")


def _weights(result, model_dir):
  """(final step, weights fingerprint) from the run's result.json."""
  assert result.returncode == 0, result.stderr
  written = finish.read_result(str(model_dir))
  return written.final_step, written.weights_fingerprint


def test_iwae_preset_trains_in_the_xla_loop_and_resumes_bit_exactly(
    small_mnist_dir, tmp_path):
  """The paper's protocol (batch 20, dynamic binarization, Adam eps 1e-4,
  its schedule) on XLA: 60 steps straight equal 30 + 30 resumed."""
  common = [f"--flagfile={_IWAE_PRESET}", f"--data_dir={small_mnist_dir}",
            "--steps_per_loop=25", "--log_every=30", "--nofigures"]
  straight = run_in_process(*common, "--train_steps=60", "--checkpoint_every=0",
                            f"--model_dir={tmp_path}/straight")
  assert ", float32, XLA" in straight.stdout  # The preset's path.
  first = run_in_process(*common, "--train_steps=30", "--checkpoint_every=30",
                         f"--model_dir={tmp_path}/split")
  assert _weights(first, tmp_path / "split")[0] == 30
  resumed = run_in_process(*common, "--train_steps=60", "--checkpoint_every=30",
                           f"--model_dir={tmp_path}/split")
  assert "resumed from" in resumed.stdout
  assert _weights(resumed, tmp_path / "split") == _weights(
      straight, tmp_path / "straight")
