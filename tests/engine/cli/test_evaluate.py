"""tools/evaluate.py: NLL from a checkpoint or an export, under any strategy,
with the run's own settings."""

import io
import json

import pytest

from engine.run import runner
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from tests.helpers import assert_one_line_error
from tests.helpers import run_tool
from tests.helpers import run_tool_in_process

pytestmark = pytest.mark.e2e

# The tests that read `iwae_run` share one worker, which trains it once.
_SHARES_THE_RUN = pytest.mark.xdist_group("evaluate_iwae_run")


@pytest.fixture(scope="module")
def iwae_run(small_mnist_dir, tmp_path_factory):
  """A short iwae_mlp run, trained on the IWAE objective, with an export."""
  model_dir = tmp_path_factory.mktemp("iwae_run")
  config = RunConfig(
      data=DataConfig(data_dir=small_mnist_dir, binarize="dynamic"),
      model=ModelConfig(name="iwae_mlp", latent_dim=50, objective="iwae",
                        iw_samples=5),
      train=TrainConfig(model_dir=str(model_dir), batch_size=20,
                        train_steps=100, log_every=50, checkpoint_every=50,
                        lr_schedule="iwae", eval_nll_samples=20,
                        jit_compile=True,  # As the presets do.
                        export_dir=str(model_dir / "export"),
                        figures=False))
  stream = io.StringIO()
  result = runner.run(config, stream=stream)
  return model_dir, result, stream.getvalue()


def _table(stdout):
  rows = {}
  for line in stdout.splitlines():
    name, _, value = line.partition("  ")
    rows[name.strip()] = value.strip()
  return rows


@_SHARES_THE_RUN
def test_the_run_itself_reports_nll_and_active_units(iwae_run):
  _, result, output = iwae_run
  assert "test NLL" in output and "K=20" in output and "active units" in output
  metrics = result.test_metrics
  # The 20-sample bound is tighter than the ELBO.
  assert metrics["nll"] < -metrics["elbo"]
  assert 0 <= metrics["active_units"] <= 50


@_SHARES_THE_RUN
def test_checkpoint_export_and_mirrored_agree(iwae_run, tmp_path):
  model_dir, _, _ = iwae_run
  common = ["--eval_nll_samples=40", "--max_test_examples=120",
            "--batch_size=40"]
  from_checkpoint = run_tool_in_process(
      "evaluate", f"--model_dir={model_dir}",
      f"--output_json={tmp_path}/ckpt.json", *common)
  assert from_checkpoint.returncode == 0, from_checkpoint.stderr
  rows = _table(from_checkpoint.stdout)
  assert rows["source"].endswith("ckpt-100 (step 100)")
  assert "NLL (IWAE, K=40)" in rows and "bits/dim" in rows
  assert "binarize=dynamic" in rows["test images"]  # From the run's config.
  assert "MB RSS" in rows["peak memory"]
  ckpt = json.load(open(tmp_path / "ckpt.json"))
  assert ckpt["examples"] == 120 and ckpt["num_samples"] == 40
  # iwae_mlp has no convolutions: its NLL is compiled (the export's is
  # not: its input checks do not compile), to the same estimate.
  assert ckpt["xla"] and "NLL with XLA" in rows["runtime"]
  assert ckpt["nll"] < -ckpt["elbo"] and ckpt["nll_stderr"] > 0
  assert ckpt["bits_per_dim"] == pytest.approx(ckpt["nll"] / (784 * 0.693147),
                                               rel=1e-5)

  from_export = run_tool_in_process(
      "evaluate", f"--saved_model={model_dir}/export/100",
      f"--data_dir={ckpt['dataset']}", "--binarize=dynamic",
      "--model=iwae_mlp", "--latent_dim=50",
      f"--output_json={tmp_path}/export.json", *common)
  assert from_export.returncode == 0, from_export.stderr
  exported = json.load(open(tmp_path / "export.json"))
  assert exported["nll"] == pytest.approx(ckpt["nll"], abs=1e-3)
  assert not exported["xla"]
  # With the run's directory too (its cached classifier): the run's own
  # jit_compile=True is not the command line's, so it is no refusal.
  both = run_tool_in_process(
      "evaluate", f"--saved_model={model_dir}/export/100",
      f"--model_dir={model_dir}", f"--output_json={tmp_path}/both.json",
      *common)
  assert both.returncode == 0, both.stderr[-2000:]
  assert json.load(open(tmp_path / "both.json"))["nll"] == exported["nll"]
  assert_one_line_error(
      run_tool_in_process("evaluate", f"--saved_model={model_dir}/export/100",
                          f"--data_dir={ckpt['dataset']}", "--jit_compile",
                          *common),
      "--jit_compile: an export's input checks")

  # Two replicas need a process whose CPU is split before TensorFlow starts.
  mirrored = run_tool("evaluate.py", f"--model_dir={model_dir}",
                      "--strategy=mirrored", "--cpu_devices=2",
                      f"--output_json={tmp_path}/mirrored.json", *common)
  assert mirrored.returncode == 0, mirrored.stderr
  split = json.load(open(tmp_path / "mirrored.json"))
  assert split["replicas"] == 2
  # Noise is keyed on the global batch: the same estimate, bit for bit up to
  # float summation order.
  assert split["nll"] == pytest.approx(ckpt["nll"], abs=1e-3)
  assert split["active_units"] == ckpt["active_units"]


def test_without_model_dir_it_looks_where_training_writes(small_mnist_dir):
  line = assert_one_line_error(
      run_tool_in_process("evaluate", "--model=dense",
                          f"--data_dir={small_mnist_dir}"),
      "--model_dir: not given", "where training with these flags writes")
  assert "runs/dense_small_mnist" in line


@_SHARES_THE_RUN
def test_a_model_flag_that_contradicts_the_run_is_refused(iwae_run):
  model_dir, _, _ = iwae_run
  assert_one_line_error(run_tool_in_process(
      "evaluate", f"--model_dir={model_dir}", "--model=conv"),
                        "--model=conv", "iwae_mlp")
  assert_one_line_error(run_tool_in_process(
      "evaluate", f"--model_dir={model_dir}", "--conditional"),
                        "--conditional=True", "trained with False")


def test_not_a_run_directory(tmp_path):
  assert_one_line_error(
      run_tool_in_process("evaluate", f"--model_dir={tmp_path}"),
      "no config.json")


def test_a_convolutional_models_nll_holds_one_bounded_chunk(small_mnist_dir,
                                                           tmp_path):
  """K=250 at batch 128 took chunks of 32,000 decoder rows whatever the
  decoder: for conv, ~5.7 GB of feature maps, several GB over the bound
  below. Its chunks now hold at most `CHUNK_OUTPUT_BYTES` of them."""
  from engine.eval import likelihood
  from engine.io import run_dir
  from models import base

  model_dir = tmp_path / "conv"
  trained = runner.run(RunConfig(
      data=DataConfig(data_dir=small_mnist_dir),
      model=ModelConfig(name="conv"),
      train=TrainConfig(model_dir=str(model_dir), batch_size=128,
                        train_steps=2, figures=False)), stream=io.StringIO())
  assert trained.final_step == 2
  # In a process of its own: its peak memory is the property.
  result = run_tool("evaluate.py", f"--model_dir={model_dir}",
                    "--eval_nll_samples=250", "--max_test_examples=128",
                    f"--output_json={tmp_path}/conv.json")
  assert result.returncode == 0, result.stderr[-2000:]
  record = json.load(open(tmp_path / "conv.json"))
  floats = base.decoder_floats(run_dir.load_trained_model(
      str(model_dir)).vae)
  assert floats > 40_000  # Its feature maps: what made chunks large.
  rows = record["samples_per_chunk"] * 128
  assert rows * 4 * floats <= likelihood.CHUNK_OUTPUT_BYTES
  # TensorFlow itself takes ~1 GB, one chunk's feature maps at most 1 GiB.
  assert record["peak_rss_mb"] < 3_000, record["peak_rss_mb"]
  assert record["nll"] > 0 and record["nll_stderr"] > 0
