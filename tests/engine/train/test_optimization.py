"""Learning-rate schedules, warm-up and the optimizers (`--lr_schedule`,
`--warmup_steps`, `--optimizer=adamw`, Adam's betas)."""

import functools
import io
import numpy as np
import pytest

from engine.io import summaries
from engine.run import runner
from engine.train import optimization
from tests.helpers import assert_one_line_error
from tests.helpers import run_in_process
from tests import helpers


def _rates(schedule, steps):
  return [float(schedule(step)) for step in steps]


def test_warmup_rises_linearly_then_the_schedule_takes_over():
  schedule = optimization.learning_rate("constant", 0.01, 100,
                                        warmup_steps=4)
  np.testing.assert_allclose(_rates(schedule, range(6)),
                             [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01],
                             rtol=1e-6)


def test_cosine_runs_from_the_rate_to_its_floor_at_the_last_step():
  schedule = optimization.learning_rate("cosine", 0.01, 100, total_steps=110,
                                        warmup_steps=10, min_fraction=0.1)
  start, middle, end, after = _rates(schedule, [10, 60, 110, 500])
  assert start == pytest.approx(0.01)
  assert middle == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))
  assert end == pytest.approx(0.001) and after == pytest.approx(0.001)


def test_exponential_and_piecewise_decay():
  exponential = optimization.learning_rate("exponential", 0.01, 50,
                                           decay_rate=0.5)
  np.testing.assert_allclose(_rates(exponential, [0, 50, 100, 25]),
                             [0.01, 0.005, 0.0025, 0.01 * 0.5 ** 0.5],
                             rtol=1e-6)
  piecewise = optimization.learning_rate("piecewise", 0.01, 50,
                                         decay_rate=0.1, boundaries=(3, 5))
  np.testing.assert_allclose(_rates(piecewise, range(7)),
                             [0.01] * 3 + [0.001] * 2 + [1e-4] * 2,
                             rtol=1e-5)


def test_the_iwae_schedule_is_piecewise_at_the_papers_stages():
  schedule = optimization.learning_rate("iwae", 1e-3, 10)
  boundaries = optimization.iwae_boundaries(10)
  assert boundaries[:3] == [10, 40, 130]  # 1, 1+3, 1+3+9 passes.
  for stage, first in enumerate([0, *boundaries]):
    expected = 1e-3 * 10 ** (-stage / 7)
    assert float(schedule(first)) == pytest.approx(expected, rel=1e-5)
    if stage:
      assert float(schedule(first - 1)) == pytest.approx(
          1e-3 * 10 ** (-(stage - 1) / 7), rel=1e-5)


def test_optimizer_settings_reach_the_optimizer():
  adam = optimization.make_optimizer("adam", 1e-3, beta_1=0.5, beta_2=0.99)
  assert (adam.beta_1, adam.beta_2) == (0.5, 0.99)
  adamw = optimization.make_optimizer("adamw", 1e-3, weight_decay=0.05)
  assert type(adamw).__name__ == "AdamW" and adamw.weight_decay == 0.05


_config = functools.partial(
    helpers.run_config, data={"max_train_examples": 512}, batch_size=32,
    train_steps=20, steps_per_loop=5, log_every=5, checkpoint_every=5)



@pytest.mark.e2e
def test_a_run_logs_its_learning_rate_and_resumes_on_the_same_curve(
    small_mnist_dir, tmp_path):
  # Every new training option at once.
  flags = dict(lr_schedule="cosine", warmup_steps=6, lr_min_fraction=0.2,
               optimizer="adamw", weight_decay=0.01, adam_beta_1=0.8,
               clip_grad_norm=10.0, skip_grad_norm=1e6, ema_decay=0.9,
               keep_best="elbo", eval_every=10, nan_policy="recover")
  straight = runner.run(_config(small_mnist_dir, tmp_path / "a", **flags),
                        stream=io.StringIO())
  logged = summaries.read_metrics(str(tmp_path / "a"))["train"]
  expected = optimization.learning_rate("cosine", 1e-3, 16, total_steps=20,
                                        warmup_steps=6, min_fraction=0.2)
  for step in (5, 10, 15, 20):  # The rate the next step takes.
    assert logged[step]["learning_rate"] == pytest.approx(
        float(expected(step)), rel=1e-6)
  # Killed at step 15 (its last checkpoint: step 10), then resumed.
  part = _config(small_mnist_dir, tmp_path / "b", **flags)
  with pytest.raises(helpers.Killed):
    runner.run(part, stream=io.StringIO(), extra_actions=(helpers.kill_at(15),))
  resumed = runner.run(part, stream=io.StringIO())
  assert resumed.resumed_from and resumed.weights_fingerprint == (
      straight.weights_fingerprint)
  # AdamW's decay and beta_1 change the weights.
  plain = runner.run(_config(small_mnist_dir, tmp_path / "c",
                             lr_schedule="cosine", warmup_steps=6,
                             lr_min_fraction=0.2), stream=io.StringIO())
  assert plain.weights_fingerprint != straight.weights_fingerprint


@pytest.mark.parametrize("flags,fragment", [
    (["--weight_decay=0.1"], "--weight_decay needs --optimizer=adamw"),
    (["--lr_boundaries=10,20"], "--lr_schedule=piecewise takes"),
    (["--lr_schedule=piecewise"], "--lr_schedule=piecewise takes"),
    (["--lr_schedule=piecewise", "--lr_boundaries=20,10"],
     "must be increasing positive steps"),
    (["--adam_beta_1=1"], "must be in [0, 1)"),
    (["--lr_decay_steps=5"], "--lr_decay_steps is the period"),
])
@pytest.mark.e2e
def test_inconsistent_schedule_settings_are_one_line_errors(tmp_path, flags,
                                                             fragment):
  result = run_in_process(f"--model_dir={tmp_path}", *flags)
  assert result.returncode == 2
  assert_one_line_error(result, fragment)
