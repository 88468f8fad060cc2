"""Where a run prints: its lines and its progress line, on one stream."""

from __future__ import annotations

import sys
from typing import Optional, TextIO


class Console:
  """Where a run prints: `say` prints a line; it is also a file for the
  progress line. Its stream may be swapped before training starts."""

  def __init__(self, stream: Optional[TextIO] = None):
    self.stream = stream or sys.stdout

  def say(self, message: str) -> None:
    print(message, file=self.stream, flush=True)

  def write(self, text: str) -> None:
    self.stream.write(text)

  def flush(self) -> None:
    self.stream.flush()
