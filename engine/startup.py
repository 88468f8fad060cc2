"""A quiet start: TensorFlow's import and device discovery without its chatter.

Importing TensorFlow 2.21 prints, twice (two of its libraries log before absl
logging is initialized, so `TF_CPP_MIN_LOG_LEVEL` cannot stop them), that
oneDNN is on and that no CUDA driver was found; looking for GPUs on a machine
without one then logs `failed call to cuInit ... (303)` at error level. None
of it is about the user's run, and it buries the engine's first line. So the
edge (`engine.main`, the tools) first imports TensorFlow through
`import_tensorflow_quietly`, which runs the import and the device discovery
with file descriptor 2 redirected, writes back every line that is not known
start-up chatter, and keeps the chatter.

A user who wants it all sees it by passing `--verbosity` (absl's flag: the
edge then `show`s what was held back) or by setting `TF_CPP_MIN_LOG_LEVEL`
themselves (then nothing is held back). This module imports nothing heavy:
it must run before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterable

# Decided before anything sets a default: an explicit setting is the user's.
USER_SET_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Substrings of the lines TensorFlow prints at start-up on a healthy machine.
STARTUP_CHATTER = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "failed call to cuInit",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "Unable to register cuDNN factory",
    "Unable to register cuFFT factory",
    "Unable to register cuBLAS factory",
    "computation placer already registered",
    "TF-TRT Warning: Could not find TensorRT",
)


@contextlib.contextmanager
def filtered_stderr(chatter: Iterable[str] = STARTUP_CHATTER):
  """Holds back what is written to fd 2 (C++ and Python) in the block, then
  writes it back without the lines containing any of `chatter`.

  Yields:
    A list that, after the block, holds the lines left out.
  """
  chatter = tuple(chatter)
  held_back = []
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as capture:
    os.dup2(capture.fileno(), 2)
    try:
      yield held_back
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      capture.seek(0)
      kept = []
      for line in capture.read().decode("utf-8", "replace").splitlines(True):
        (held_back if any(text in line for text in chatter)
         else kept).append(line)
      if kept:
        sys.stderr.write("".join(kept))
        sys.stderr.flush()


def import_tensorflow_quietly() -> list[str]:
  """Imports TensorFlow and discovers devices, holding back the chatter.

  Returns:
    The lines held back (none if the user set `TF_CPP_MIN_LOG_LEVEL`, or
    TensorFlow was already imported).
  """
  if USER_SET_LOG_LEVEL or "tensorflow" in sys.modules:
    return []
  with filtered_stderr() as held_back:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_physical_devices()  # Where cuInit is called.
  return held_back


def show(lines: list[str]) -> None:
  """Writes held-back lines to stderr (for --verbosity)."""
  sys.stderr.write("".join(lines))
  sys.stderr.flush()


def quiet_logs(verbose: bool, held_back: list[str]) -> None:
  """What the engine and the tools print is what a user reads; --verbosity
  shows the rest (TensorFlow's start-up lines, saver/exporter INFO,
  tf.data's warning that tf.distribute reads a dataset's options while
  tracing)."""
  import logging  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top

  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top

  if verbose:
    show(held_back)
    return
  warnings.filterwarnings("ignore", category=UserWarning,
                          message="To make it possible to preserve tf.data")
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("tensorflow").setLevel(logging.WARNING)


def describe_main(doc: str) -> None:
  """absl prints the `__main__` module's docstring as the usage text; an
  installed console script's `__main__` is a wrapper without one, and a
  clone's `tools/<tool>.py` a one-line shim, so the command's own is given
  to it. `--help` and `--helpfull` print it themselves (`flags.usage`), as
  written: absl's own paths (`--helpxml`, a `--help` inside a flagfile)
  are what still read it here. A tool's examples keep their line
  continuations only if its docstring is raw (`r\"\"\"`): in a plain one,
  Python joins a line ending in a backslash to the next."""
  main = sys.modules.get("__main__")
  if main is not None and doc:
    main.__doc__ = doc
