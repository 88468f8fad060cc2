"""The owner of the loop and the lifecycle: a controller that trains to each
boundary, hands each call's outputs to actions, checkpoints and evaluates on
the way, and at completion saves once, evaluates and ends the run."""

import io

import pytest

from engine.train import controller
from engine.run import runner
from engine.io import summaries
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.train.loop_state import LoopOutputs


class _FakeTrainer:
  """Counts steps; every step trains 10 examples with loss = the step."""

  def __init__(self):
    self.step = 0
    self.calls = []

  def train(self, num_steps):
    first = self.step
    self.step += num_steps
    self.calls.append(num_steps)
    loss = sum(range(first + 1, self.step + 1)) * 10.0
    return LoopOutputs(step=self.step, steps=num_steps,
                       sums={"loss": loss}, examples=10.0 * num_steps,
                       seconds=0.01)


class _FakeCheckpoints:

  def __init__(self, log):
    self.log, self.saved = log, []

  def save(self, step):
    self.saved.append(step)
    self.log.append(("save", step))
    return f"ckpt-{step}"

  @property
  def latest(self):
    return f"ckpt-{self.saved[-1]}" if self.saved else None

  def latest_step(self):
    return self.saved[-1] if self.saved else None


class _FakeEvaluator:

  def __init__(self, log):
    self.log = log

  def evaluate(self, step):
    self.log.append(("evaluate", step))
    return {"elbo": -float(step)}


def _controller(trainer, log, actions=(), last_step=13, steps_per_loop=5,
                **kwargs):
  return controller.Controller(
      trainer=trainer, evaluator=_FakeEvaluator(log),
      checkpoints=_FakeCheckpoints(log), last_step=last_step,
      steps_per_loop=steps_per_loop, train_actions=actions, **kwargs)


class _Record(controller.Action):

  def __init__(self, every, log, name):
    super().__init__(every)
    self.log, self.name = log, name

  def begin(self, step):
    self.log.append((self.name, "begin", step))

  def end(self):
    self.log.append((self.name, "end"))

  def __call__(self, outputs):
    self.log.append((self.name, outputs.step))


def test_the_loop_stops_at_every_actions_boundary_and_calls_them_in_order():
  trainer, log = _FakeTrainer(), []
  trainer.step = 1  # Resumed at step 1.
  actions = [_Record(4, log, "a"), _Record(6, log, "b"), _Record(0, log, "c")]
  final = _controller(trainer, log, actions).train()
  assert final == 13
  # Boundaries: 4 (a), 6 (b and 1 + 5), 8 (a), 12 (a, b), 13 (the end).
  assert trainer.calls == [3, 2, 2, 4, 1]
  assert log == [
      ("a", "begin", 1), ("b", "begin", 1), ("c", "begin", 1),
      ("a", 4), ("c", 4), ("b", 6), ("c", 6), ("a", 8), ("c", 8),
      ("a", 12), ("b", 12), ("c", 12), ("c", 13),
      ("a", "end"), ("b", "end"), ("c", "end")]


def test_an_action_that_raises_ends_the_loop_and_every_action_ends():
  trainer, log = _FakeTrainer(), []

  class Stop(controller.Action):

    def __call__(self, outputs):
      raise RuntimeError(f"stop at {outputs.step}")

  with pytest.raises(RuntimeError, match="stop at 3"):
    _controller(trainer, log, [Stop(3), _Record(0, log, "r")],
                last_step=10, steps_per_loop=10).train_and_evaluate()
  assert log[-1] == ("r", "end") and trainer.step == 3
  assert ("save", 3) not in log  # What raised ends the run unsaved.


def test_the_controller_checkpoints_evaluates_and_ends_the_run_once():
  """Periodic saves and evaluations stop the loop at their steps; the last
  step is saved and evaluated once, then each end action sees the end."""
  trainer, log = _FakeTrainer(), []
  ends = []
  run = _controller(trainer, log, [_Record(0, log, "train")], last_step=12,
                    steps_per_loop=100, checkpoint_every=4, eval_every=6,
                    eval_actions=[lambda step, m: log.append(("report", m))],
                    end_actions=[lambda end: ends.append(end)])
  end = run.train_and_evaluate()
  assert trainer.calls == [4, 2, 2, 4]
  assert [entry for entry in log if entry[0] != "train"] == [
      ("save", 4), ("evaluate", 6), ("report", {"elbo": -6.0}), ("save", 8),
      ("save", 12), ("evaluate", 12), ("report", {"elbo": -12.0})]
  assert ends == [end] and end.step == 12 and end.checkpoint == "ckpt-12"
  assert end.metrics == {"elbo": -12.0}


def test_a_run_already_at_its_last_step_is_not_saved_again():
  trainer, log = _FakeTrainer(), []
  trainer.step = 10
  run = _controller(trainer, log, last_step=10)
  run.checkpoints.saved.append(10)
  end = run.train_and_evaluate()
  assert trainer.calls == [] and end.checkpoint == "ckpt-10"
  assert ("save", 10) not in log and log == [("evaluate", 10)]


class _Weights:
  """Which weights the model holds: the controller swaps the evaluation
  weights (a moving average) in through `swapped`."""

  def __init__(self, log):
    self.log, self.held = log, "training"

  def swapped(self):
    weights = self

    class _Swap:

      def __enter__(self):
        weights.held = "evaluation"
        weights.log.append(("swap in",))

      def __exit__(self, *exc):
        weights.held = "training"
        weights.log.append(("swap out",))

    return _Swap()


class _TwoPassEvaluator:
  """Scores whatever weights are held: the training weights first, then
  the evaluation weights with the training weights' score beside theirs."""

  def __init__(self, log, weights):
    self.log, self.weights = log, weights

  def evaluate_training_weights(self, step):
    self.log.append(("score", self.weights.held, step))
    return {"elbo_raw": -float(step)}

  def evaluate(self, step, training_metrics=None):
    self.log.append(("evaluate", self.weights.held, step))
    return {"elbo": -step / 2, **(training_metrics or {})}


def test_evaluation_weights_are_swapped_in_once_for_evaluations_and_the_end():
  """The training weights are scored before the evaluation weights go in;
  the eval actions and the end actions see the evaluation weights; every
  checkpoint and training call holds the training weights."""
  trainer, log = _FakeTrainer(), []
  weights = _Weights(log)
  held_at_save = []
  run = controller.Controller(
      trainer=trainer, evaluator=_TwoPassEvaluator(log, weights),
      checkpoints=_FakeCheckpoints(log), last_step=8, steps_per_loop=100,
      checkpoint_every=4, eval_every=4,
      eval_actions=[lambda step, m: log.append(("report", weights.held, m))],
      end_actions=[lambda end: log.append(("end", weights.held))],
      evaluation_weights=weights.swapped)
  original_save = run.checkpoints.save
  run.checkpoints.save = lambda step: (held_at_save.append(weights.held),
                                       original_save(step))[1]
  end = run.train_and_evaluate()
  both = {"elbo": -4.0, "elbo_raw": -8.0}
  assert log == [
      ("save", 4), ("score", "training", 4), ("swap in",),
      ("evaluate", "evaluation", 4),
      ("report", "evaluation", {"elbo": -2.0, "elbo_raw": -4.0}),
      ("swap out",), ("save", 8), ("score", "training", 8), ("swap in",),
      ("evaluate", "evaluation", 8), ("report", "evaluation", both),
      ("end", "evaluation"), ("swap out",)]
  assert held_at_save == ["training", "training"]
  assert end.metrics == both and weights.held == "training"


class LossRecorder(controller.Action):
  """A new per-step concern, written outside the engine: each step's mean
  training loss."""

  def __init__(self):
    super().__init__(every=1)
    self.losses = {}

  def __call__(self, outputs):
    self.losses[outputs.step] = outputs.sums["loss"] / outputs.examples


@pytest.mark.e2e
def test_a_new_action_joins_a_real_run_without_editing_the_engine(
    small_mnist_dir, tmp_path):
  recorder = LossRecorder()
  config = RunConfig(
      data=DataConfig(data_dir=small_mnist_dir),
      model=ModelConfig(name="dense", latent_dim=2),
      train=TrainConfig(model_dir=str(tmp_path), batch_size=64,
                        train_steps=12, steps_per_loop=5, log_every=6,
                        checkpoint_every=0, figures=False))
  result = runner.run(config, stream=io.StringIO(), extra_actions=(recorder,))
  assert result.final_step == 12
  assert sorted(recorder.losses) == list(range(1, 13))
  # What the progress action logged is the mean of the recorded steps.
  logged = summaries.read_metrics(str(tmp_path))["train"]
  for step in (6, 12):
    expected = sum(recorder.losses[s] for s in range(step - 5, step + 1)) / 6
    assert logged[step]["loss"] == pytest.approx(expected, rel=1e-6)
