"""The progress line's numbers: throughput counts and times the same span."""

from engine import progress


class _Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def test_throughput_leaves_out_the_time_spent_evaluating():
  """1,000 examples trained in 0.5 s, then a 3 s evaluation, then 1,000 more
  in 0.5 s: 2,000 examples / 1 s, whether or not an evaluation sat between
  the two reports (dividing by the time since the evaluation gave 4,000)."""
  clock = _Clock()
  throughput = progress.Throughput(clock)
  clock.now += 0.5
  with throughput.paused():
    clock.now += 3.0
  clock.now += 0.5
  assert throughput.measure(2000) == 2000.0
  clock.now += 2.0  # The next span starts at the report, with nothing left out.
  assert throughput.measure(1000) == 500.0


def test_an_evaluation_that_fails_still_ends_the_pause():
  clock = _Clock()
  throughput = progress.Throughput(clock)
  try:
    with throughput.paused():
      clock.now += 5.0
      raise KeyboardInterrupt
  except KeyboardInterrupt:
    pass
  clock.now += 1.0
  assert throughput.measure(10) == 10.0
