"""A hierarchical model (iwae_mlp2) through the command line: the IWAE
objective, exact resume, per-group evaluation, figures on the top group, and
the tools."""

import json

import pytest

from engine.run import finish
from tests.helpers import assert_one_line_error
from tests.helpers import run_tool_in_process
from tests.helpers import run_in_process

pytestmark = pytest.mark.e2e

_COMMON = ("--model=iwae_mlp2", "--latent_dim=6", "--binarize=dynamic",
           "--objective=iwae", "--iw_samples=5", "--batch_size=32",
           "--steps_per_loop=10", "--log_every=20", "--eval_nll_samples=10")


def test_iwae_mlp2_resumes_bit_exactly_and_reports_each_group(
    small_mnist_dir, tmp_path):
  common = (*_COMMON, f"--data_dir={small_mnist_dir}")
  straight = run_in_process(*common, "--train_steps=40", "--checkpoint_every=0",
                            "--nofigures", f"--model_dir={tmp_path}/straight")
  assert straight.returncode == 0, straight.stderr[-3000:]
  split = tmp_path / "split"
  first = run_in_process(*common, "--train_steps=20", "--checkpoint_every=20",
                         "--nofigures", f"--model_dir={split}")
  assert first.returncode == 0, first.stderr[-3000:]
  resumed = run_in_process(*common, "--train_steps=40", "--checkpoint_every=20",
                           f"--model_dir={split}",
                           f"--export_dir={split}/export")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stdout
  ours = finish.read_result(str(split))
  assert ours.weights_fingerprint == finish.read_result(
      str(tmp_path / "straight")).weights_fingerprint
  # The evaluation counts each group's active units and estimates the NLL
  # from the sampled log-densities.
  assert "active units (z1 " in resumed.stdout and "/4, z2 " in resumed.stdout
  metrics = ours.test_metrics
  assert metrics["active_units"] == (metrics["active_units_z1"]
                                     + metrics["active_units_z2"])
  assert metrics["nll"] < -metrics["elbo"]  # K=10 is the tighter bound.
  assert {p.name for p in (split / "figures").iterdir()} >= {
      "latent_manifold.png", "samples.png", "traversals.png"}
  marker = json.loads((split / "export" / "40" / "assets.extra" /
                       "vae_engine_export.json").read_text())
  assert "decode_top" in marker["signatures"]

  evaluated = run_tool_in_process(
      "evaluate", f"--model_dir={split}", f"--data_dir={small_mnist_dir}",
      "--eval_nll_samples=10", "--batch_size=64",
      f"--output_json={tmp_path}/e.json")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  record = json.loads((tmp_path / "e.json").read_text())
  assert record["active_units"] == (record["active_units_z1"]
                                    + record["active_units_z2"])
  assert "; z1 " in evaluated.stdout
  refused = run_tool_in_process(
      "evaluate", f"--saved_model={split}/export/40", "--model=iwae_mlp2",
      f"--data_dir={small_mnist_dir}", "--binarize=dynamic",
      "--eval_nll_samples=10")
  assert_one_line_error(refused, "the export of a hierarchical model",
                        "pass the run's --model_dir instead")
  plotted = run_tool_in_process("plot", f"--saved_model={split}/export/40",
                                f"--data_dir={small_mnist_dir}",
                                f"--output_dir={tmp_path}/plots")
  assert plotted.returncode == 0, plotted.stderr[-3000:]
  assert (tmp_path / "plots" / "samples.png").exists()


def test_a_hierarchical_model_refuses_labels_before_training(
    small_mnist_dir, tmp_path):
  result = run_in_process(*_COMMON, f"--data_dir={small_mnist_dir}",
                          "--conditional", "--train_steps=5",
                          f"--model_dir={tmp_path}")
  assert_one_line_error(result, "--model=iwae_mlp2: a hierarchical model "
                        "cannot be made conditional on labels")
  assert not (tmp_path / "ckpt-5.index").exists()
