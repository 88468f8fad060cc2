"""--clip_grad_norm, --skip_grad_norm, and the global gradient norm in the
summaries (engine.train.gradient_norms)."""

import functools
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from engine.errors import TrainingDiverged
from engine.io import summaries
from engine.run import build
from engine.run import runner
from tests.helpers import REPO_ROOT
from tests import helpers
from tests.helpers import run_in_process


_config = functools.partial(
    helpers.run_config, data={"max_train_examples": 512}, batch_size=32,
    train_steps=10, steps_per_loop=5, log_every=5, checkpoint_every=0,
    optimizer="sgd", learning_rate=1e-3)



def _weights(run):
  return np.concatenate([v.numpy().ravel()
                         for v in run.vae.trainable_variables])


@pytest.mark.e2e
def test_the_norm_is_logged_and_a_high_threshold_changes_nothing(
    small_mnist_dir, tmp_path):
  plain = runner.run(_config(small_mnist_dir, tmp_path / "a"),
                     stream=io.StringIO())
  guarded = runner.run(_config(small_mnist_dir, tmp_path / "b",
                               skip_grad_norm=1e9, clip_grad_norm=1e9),
                       stream=io.StringIO())
  assert guarded.weights_fingerprint == plain.weights_fingerprint
  train = summaries.read_metrics(str(tmp_path / "b"))["train"]
  assert all(0 < train[step]["grad_norm"] < 1e9 for step in (5, 10))
  assert train[10]["skipped_steps/gradient_norm"] == 0


@pytest.mark.e2e
def test_clipping_bounds_every_update(small_mnist_dir, tmp_path):
  """SGD at rate 1e-3 moves the weights by at most 1e-3 * clip a step."""
  clip, steps = 0.5, 10
  start = build.build(_config(small_mnist_dir, tmp_path / "s"))
  before = _weights(start)
  run = build.build(_config(small_mnist_dir, tmp_path / "c",
                            clip_grad_norm=clip, train_steps=steps))
  runner.train_evaluate_export(run, io.StringIO())
  moved = np.linalg.norm(_weights(run) - before)
  assert 0 < moved <= steps * 1e-3 * clip * (1 + 1e-4)
  unclipped = build.build(_config(small_mnist_dir, tmp_path / "u",
                                  train_steps=steps))
  runner.train_evaluate_export(unclipped, io.StringIO())
  # The norms are far above 0.5 here: clipping did bound the steps.
  assert np.linalg.norm(_weights(unclipped) - before) > 10 * moved


@pytest.mark.e2e
def test_a_threshold_below_every_norm_stops_with_one_line(small_mnist_dir,
                                                          tmp_path):
  config = _config(small_mnist_dir, tmp_path, skip_grad_norm=1e-6,
                   max_skipped_steps=3)
  run = build.build(config)
  before = _weights(run)
  with pytest.raises(TrainingDiverged, match=(
      r"training stopped at step 3: 3 updates in a row had a gradient norm "
      r"over --skip_grad_norm=1e-06 \(the last: [0-9.e+]+; 3 skipped in "
      r"all\); no checkpoint was written\. Raise --skip_grad_norm")):
    runner.train_evaluate_export(run, io.StringIO())
  np.testing.assert_array_equal(_weights(run), before)  # None applied.
  result = run_in_process(f"--data_dir={small_mnist_dir}",
                          f"--model_dir={tmp_path / 'cli'}", "--model=dense",
                          "--skip_grad_norm=1e-6", "--train_steps=20",
                          "--nofigures")
  assert result.returncode == 3
  errors = [line for line in result.stderr.splitlines()
            if line.startswith("error:")]
  assert len(errors) == 1 and "--skip_grad_norm=1e-06" in errors[0], (
      result.stderr[-2000:])


_MIRRORED = r"""
import io, json, sys
import numpy as np
from engine.config import *
from engine.run import build, runner
from engine.io import summaries
data_dir, root = sys.argv[1], sys.argv[2]
out = {}
# The one-device reference runs without XLA's compile, which the clipping
# does not depend on (one device under XLA: test_clipping_bounds_every_update;
# the mirrored runs keep --jit_compile's default).
for strategy in ("mirrored", "default"):
  config = RunConfig(
      data=DataConfig(data_dir=data_dir, max_train_examples=512),
      model=ModelConfig(name="dense"),
      train=TrainConfig(model_dir=f"{root}/{strategy}", batch_size=64,
                        train_steps=10, steps_per_loop=5, log_every=5,
                        checkpoint_every=0, figures=False,
                        clip_grad_norm=10.0, skip_grad_norm=1e6,
                        jit_compile=None if strategy == "mirrored" else False),
      distribution=DistributionConfig(strategy=strategy, cpu_devices=2))
  run = build.build(config)
  runner.train_evaluate_export(run, io.StringIO())
  out[strategy] = {
      "weights": np.concatenate([v.numpy().ravel()
                                 for v in run.vae.trainable_variables]).tolist(),
      "norms": [summaries.read_metrics(f"{root}/{strategy}")["train"][s]
                ["grad_norm"] for s in (5, 10)],
      "replicas": run.trainer.strategy.num_replicas_in_sync}
# Every option at once, resumed: the weights of the run never interrupted.
every = dict(batch_size=64, steps_per_loop=5, log_every=5, figures=False,
             checkpoint_every=5, clip_grad_norm=10.0, skip_grad_norm=1e6,
             optimizer="adamw", weight_decay=0.01, adam_beta_2=0.99,
             lr_schedule="exponential", lr_decay_steps=3, warmup_steps=2,
             ema_decay=0.9, ema_dynamic_decay=True, keep_best="elbo",
             eval_every=5, nan_policy="recover")
def mirrored(model_dir, steps):
  return RunConfig(
      data=DataConfig(data_dir=data_dir, max_train_examples=512),
      model=ModelConfig(name="dense"),
      train=TrainConfig(model_dir=model_dir, train_steps=steps, **every),
      distribution=DistributionConfig(strategy="mirrored", cpu_devices=2))
straight = runner.run(mirrored(f"{root}/straight", 12), io.StringIO())
runner.run(mirrored(f"{root}/split", 5), io.StringIO())
resumed = runner.run(mirrored(f"{root}/split", 12), io.StringIO())
out["resume"] = [straight.weights_fingerprint, resumed.weights_fingerprint,
                 bool(resumed.resumed_from)]
print(json.dumps(out))
"""


@pytest.mark.e2e
def test_mirrored_replicas_clip_the_summed_gradient_and_resume_exactly(
    small_mnist_dir, tmp_path):
  result = subprocess.run([sys.executable, "-c", _MIRRORED, small_mnist_dir,
                           str(tmp_path)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json.loads(result.stdout.strip().splitlines()[-1])
  assert out["mirrored"]["replicas"] == 2
  np.testing.assert_allclose(out["mirrored"]["norms"], out["default"]["norms"],
                             rtol=1e-4)
  assert min(out["default"]["norms"]) > 10  # Clipping was at work.
  np.testing.assert_allclose(out["mirrored"]["weights"],
                             out["default"]["weights"], atol=1e-5)
  straight, resumed, was_resumed = out["resume"]
  assert was_resumed and resumed == straight
