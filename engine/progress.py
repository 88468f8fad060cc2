"""The console progress line: a bar, the loss terms, throughput and ETA."""

from __future__ import annotations

import sys
from typing import TextIO


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours:d}:{minutes:02d}:{seconds:02d}"


class ProgressBar:
  """Prints one line per report: `step 400/4680 [##---] loss ... ex/s ETA`.

  Args:
    total_steps: The step the run ends at.
    stream: Where to print (stdout by default).
    width: Characters in the bar.
  """

  def __init__(self, total_steps: int, stream: TextIO | None = None,
               width: int = 20):
    self._total = total_steps
    self._stream = stream or sys.stdout
    self._width = width

  def report(self, step: int, metrics: dict[str, float],
             examples_per_sec: float, seconds_left: float) -> str:
    """Prints and returns the progress line for `step`."""
    done = min(step / max(self._total, 1), 1.0)
    filled = int(round(done * self._width))
    bar = "#" * filled + "-" * (self._width - filled)
    line = (f"step {step}/{self._total} [{bar}] {100 * done:5.1f}% "
            f"loss {metrics['loss']:.2f} recon {metrics['reconstruction']:.2f} "
            f"kl {metrics['kl']:.2f} | {examples_per_sec:,.0f} ex/s "
            f"| ETA {_format_duration(seconds_left)}")
    print(line, file=self._stream, flush=True)
    return line
