"""The progress line's numbers: throughput counts and times the same span."""

import io

from engine.train import actions
from engine.train.loop_state import LoopOutputs


class _Writer:
  def __init__(self):
    self.records = []

  def scalars(self, split, step, values):
    self.records.append((split, step, values))


def _outputs(step, examples, seconds, loss=100.0):
  return LoopOutputs(step=step, steps=10, sums={"loss": loss * examples,
                                                "reconstruction": 0.0,
                                                "kl": 0.0, "elbo": 0.0},
                     examples=examples, seconds=seconds)


def test_the_rate_is_the_training_calls_examples_over_their_time():
  """1,000 examples in 0.5 s, an evaluation (3 s, not a training call), then
  1,000 more in 0.5 s: 2,000 examples per second, not 2,000 / 4 s or (as
  before) 1,000 / 0.5 s counted from the end of the evaluation."""
  writer, stream = _Writer(), io.StringIO()
  progress = actions.ProgressAction(every=20, last_step=40, start_step=0,
                                    stream=stream, writer=writer,
                                    say=lambda line: None)
  first, second = _outputs(10, 1000, 0.5), _outputs(20, 1000, 0.5, loss=50.0)
  progress.observe(first)
  assert not progress.fires(first)
  progress.observe(second)
  assert progress.fires(second)
  progress(second)
  split, step, values = writer.records[-1]
  assert (split, step) == ("train", 20)
  assert values["examples_per_sec"] == 2000.0
  assert values["loss"] == 75.0  # The mean over both calls' examples.
  assert "2,000 ex/s" in stream.getvalue()
  # The next report counts only what came after this one.
  last = _outputs(40, 500, 1.0)
  progress.observe(last)
  assert progress.fires(last)
  progress(last)
  assert writer.records[-1][2]["examples_per_sec"] == 500.0


def test_the_line_names_the_epoch_where_steps_per_epoch_is_known():
  """Passes over the training set done, of the run's: 300 steps of 100 an
  epoch, of 1,000 steps, is epoch 3.00/10; without the size, no epoch."""
  stream = io.StringIO()
  progress = actions.ProgressAction(every=100, last_step=1000, start_step=0,
                                    stream=stream, writer=_Writer(),
                                    say=lambda line: None,
                                    steps_per_epoch=100)
  line = progress.report(300, {"loss": 1.0, "reconstruction": 1.0,
                               "kl": 0.0}, 10.0, 5.0)
  assert line.startswith("step 300/1000 [######--------------]  30.0% "
                         "epoch 3.00/10 loss 1.00"), line
  progress.steps_per_epoch = 469
  line = progress.report(250, {"loss": 1.0, "reconstruction": 1.0,
                               "kl": 0.0}, 10.0, 5.0)
  assert " epoch 0.53/2.132 loss" in line, line
  progress.steps_per_epoch = None
  assert "epoch" not in progress.report(
      300, {"loss": 1.0, "reconstruction": 1.0, "kl": 0.0}, 10.0, 5.0)
