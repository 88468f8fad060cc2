"""The outer loop: a controller that hands each call's outputs to actions."""

import io

import pytest

from engine import controller
from engine import runner
from engine import summaries
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.loop_state import LoopOutputs


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
                       seconds=0.01, stopped=False, skipped_steps=0)


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
  final = controller.Controller(trainer.train, actions, last_step=13,
                                steps_per_loop=5).run(1)
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
    controller.Controller(trainer.train, [Stop(3), _Record(0, log, "r")],
                          last_step=10, steps_per_loop=10).run(0)
  assert log[-1] == ("r", "end") and trainer.step == 3


class LossRecorder(controller.Action):
  """A new per-step concern, written outside the engine: each step's mean
  training loss."""

  def __init__(self):
    super().__init__(every=1)
    self.losses = {}

  def __call__(self, outputs):
    self.losses[outputs.step] = outputs.sums["loss"] / outputs.examples


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
