"""vae-engine nll_rate: the NLL estimate's speed, compiled against not."""

import json

import pytest

from tests.helpers import assert_one_line_error, run_tool
from tests.helpers import run_tool_in_process

pytestmark = pytest.mark.e2e


def test_times_both_and_gets_the_same_estimate(small_mnist_dir, tmp_path):
  out = tmp_path / "rate.json"
  result = run_tool("nll_rate.py", f"--data_dir={small_mnist_dir}",
                    "--images=30", "--samples=20", "--batch_size=10",
                    "--rounds=1", f"--json_out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  # iwae_mlp's decoder: 50-200-200-784 Dense layers, 2 FLOPs a weight.
  assert report["decoder_flops_per_row"] == 2 * (50 * 200 + 200 * 200
                                                 + 200 * 784)
  assert report["decoder_flops"] == report["decoder_flops_per_row"] * 30 * 20
  assert set(report["variants"]) == {"false", "true"}
  assert report["nll"]["true"] == pytest.approx(report["nll"]["false"],
                                                abs=1e-3)
  assert report["xla_speedup"] > 0 and report["matmul_peak_flops"] > 0
  assert "XLA / no XLA:" in result.stdout and "CPU: " in result.stdout


def test_bad_paths_are_one_line_before_any_timing(tmp_path,
                                                   small_mnist_dir):
  # The tool's answers, from this process (its start: the test above).
  assert_one_line_error(run_tool_in_process("nll_rate",
                                            f"--data_dir={tmp_path}/no"),
                        "--data_dir")
  (tmp_path / "file").write_text("mine")
  result = run_tool_in_process("nll_rate", f"--data_dir={small_mnist_dir}",
                               f"--json_out={tmp_path}/file/rate.json")
  assert_one_line_error(result, "--json_out=")
  assert "XLA" not in result.stdout  # Refused before the timing.
  assert (tmp_path / "file").read_text() == "mine"


def test_only_dense_decoders_have_their_flops_counted():
  import models
  from engine.cli import nll_rate
  mlp = models.get("iwae_mlp").build((28, 28, 1), 50)
  assert nll_rate.decoder_matmul_flops(mlp) == 2 * (50 * 200 + 200 * 200
                                                    + 200 * 784)
  # conv's decoder starts with a Dense layer, but the convolutions are the
  # work: no figure rather than a wrong one.
  assert nll_rate.decoder_matmul_flops(
      models.get("conv").build((28, 28, 1), 2)) == 0
