"""--profile_steps writes a trace of exactly those steps; the tool reads it."""

import io

import pytest

from engine.run import runner
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.errors import UserError


from engine.cli import profile_summary  # noqa: E402

pytestmark = pytest.mark.e2e


def test_a_profiled_xla_run_shows_its_ops_and_xla_executions(
    small_mnist_dir, tmp_path):
  stream = io.StringIO()
  runner.run(RunConfig(
      data=DataConfig(data_dir=small_mnist_dir, max_train_examples=512),
      model=ModelConfig(name="dense", latent_dim=2),
      train=TrainConfig(model_dir=str(tmp_path), batch_size=32,
                        train_steps=12, steps_per_loop=5, log_every=12,
                        checkpoint_every=0, figures=False, jit_compile=True,
                        profile_steps=(3, 9))), stream=stream)
  assert "profile of steps 3-9 written" in stream.getvalue()
  summary = profile_summary.summarize(profile_summary.newest_trace(
      str(tmp_path)))
  # Steps 3-9 run as calls [3, 5) and [5, 9): the loop pauses at both
  # edges, and each call is one XLA execution of its steps.
  assert summary["xla"]["count"] == 2
  names = [name for name, _, _ in summary["ops"]]
  assert any("MatMul" in name or "dot" in name for name in names), names[:20]
  assert 0 < summary["busy_ms"]


def test_no_trace_is_a_one_line_error(tmp_path):
  with pytest.raises(UserError, match="no plugins/profile"):
    profile_summary.newest_trace(str(tmp_path))


def test_a_conv_step_is_grouped_into_kernel_kinds(small_mnist_dir, tmp_path):
  """--group=kind: where a conv step's time goes (convolutions first)."""
  runner.run(RunConfig(
      data=DataConfig(data_dir=small_mnist_dir, max_train_examples=512),
      model=ModelConfig(name="conv", latent_dim=2),
      train=TrainConfig(model_dir=str(tmp_path), batch_size=32,
                        train_steps=8, steps_per_loop=2, log_every=8,
                        checkpoint_every=0, figures=False,
                        profile_steps=(2, 6))), stream=io.StringIO())
  ops = profile_summary.summarize(profile_summary.newest_trace(
      str(tmp_path)))["ops"]
  kinds = dict((name, total) for name, total, _ in
               profile_summary.grouped(ops, "kind"))
  assert set(kinds) <= {"convolution", "matmul", "optimizer", "input",
                        "other"}
  assert kinds["convolution"] > 0 and kinds["optimizer"] > 0
  # Grouping moves time between rows, never loses it.
  assert sum(kinds.values()) == pytest.approx(sum(t for _, t, _ in ops))
  kernels = [name for name, _, _ in profile_summary.grouped(ops, "kernel")]
  assert any(name.startswith("Conv2DBackpropFilter") for name in kernels)
  assert profile_summary.kind_of("decoder/conv:_MklConv2D") == "convolution"
  assert profile_summary.kernel_of("a/b:_MklNativeConv2D") == "Conv2D"
