"""--nan_policy=recover: back to the last good checkpoint at a lower rate
(engine.train.recovery)."""

import functools
import io

import numpy as np
import pytest

from engine.errors import TrainingDiverged
from engine.run import build
from engine.run import finish
from engine.run import runner
from tests import helpers
from tests.engine.train.trainers import poison

pytestmark = pytest.mark.e2e


_config = functools.partial(
    helpers.run_config, data={"max_train_examples": 512}, batch_size=32,
    train_steps=30, steps_per_loop=5, log_every=5, checkpoint_every=10,
    nan_policy="recover", learning_rate=2e-3)


def _run(config, poisoned_at=None, once=True, extra_actions=()):
  stream = io.StringIO()
  run = build.build(config, stream, extra_actions)
  if poisoned_at is not None:
    poison(run.trainer, poisoned_at, once)
  return run, runner.train_evaluate_export(run), stream.getvalue()


@pytest.fixture(scope="module")
def poisoned_run(small_mnist_dir, tmp_path_factory):
  """The run whose step 15 is poisoned, trained once for the module: its
  recovery is tested, and it is what a killed run must resume to."""
  model_dir = tmp_path_factory.mktemp("poisoned")
  run, result, log = _run(_config(small_mnist_dir, model_dir), poisoned_at=15)
  return run, result, log, model_dir


@pytest.mark.xdist_group("recovery_poisoned_run")
def test_a_poisoned_step_is_recovered_from_at_a_lower_rate(poisoned_run):
  run, result, log, model_dir = poisoned_run
  assert result.final_step == 30
  assert all(np.isfinite(v.numpy()).all()
             for v in run.vae.trainable_variables)
  assert np.isfinite(result.test_metrics["elbo"])
  [event] = result.recoveries
  assert event["step"] == 16 and event["terms"] == "gradients"
  assert event["restored"].endswith("ckpt-10")
  assert event["learning_rate_scale"] == 0.5 and event["recovery"] == 1
  assert finish.read_result(str(model_dir)).recoveries == [event]
  assert "step 16: the gradients became non-finite; recovered from" in log
  assert run.trainer.learning_rate_now() == pytest.approx(1e-3)


@pytest.mark.xdist_group("recovery_poisoned_run")
def test_a_run_killed_after_a_recovery_resumes_at_the_lowered_rate(
    small_mnist_dir, tmp_path, poisoned_run):
  _, straight, _, _ = poisoned_run
  with pytest.raises(helpers.Killed):
    _run(_config(small_mnist_dir, tmp_path / "b"), poisoned_at=15,
         extra_actions=(helpers.kill_at(25),))
  run, resumed, _ = _run(_config(small_mnist_dir, tmp_path / "b"))
  assert resumed.resumed_from.endswith("ckpt-20")
  assert run.trainer.learning_rate_now() == pytest.approx(1e-3)
  assert resumed.weights_fingerprint == straight.weights_fingerprint


def test_recoveries_end_at_the_limit_and_need_a_checkpoint(small_mnist_dir,
                                                           tmp_path):
  with pytest.raises(TrainingDiverged, match=(
      r"training stopped at step 16: the gradients became non-finite again "
      r"after 2 recoveries \(--max_recoveries=2\)")):
    _run(_config(small_mnist_dir, tmp_path / "a", max_recoveries=2),
         poisoned_at=15, once=False)
  with pytest.raises(TrainingDiverged, match="before any checkpoint"):
    _run(_config(small_mnist_dir, tmp_path / "b"), poisoned_at=3)
