"""The errors users see, and the one way they are reported.

Every failure a user can fix ends as one line on stderr,

    error: <flag or file>: <what is wrong>; <what to do>

and exit status 2 (`fail`), from the engine and from every tool alike.
Names a user typed are quoted when they hold anything but plain path
characters (`quoted`), so a file name with a newline or a space cannot split
or blur the line, and reasons taken from TensorFlow are cleaned of its op
names and device strings while the operating system's reason is kept
(`reason`).
"""

from __future__ import annotations

import re
import sys

EXIT_USAGE = 2


class UserError(Exception):
  """Bad input from the user: a flag, a file or a directory.

  The message must name the culprit (flag, file or directory) and say what is
  wrong with it; it is printed as a single line and the process exits 2.
  """


class DataError(UserError):
  """A dataset file or source that cannot be read or is malformed."""


class CheckpointMismatchError(UserError):
  """A `--model_dir` whose checkpoint belongs to another model or architecture."""


class TrainingDiverged(Exception):
  """The loss or its gradients became non-finite and `--nan_policy` says stop.

  The message names the step and the term; the last good checkpoint is kept.
  """


_PLAIN = re.compile(r"[\w./:@%+=,~-]*")
# What TensorFlow wraps around an op's message: the function and node it ran
# in, the op's name, the device it ran on.
_TF_NOISE = (
    re.compile(r"\{\{function_node [^}]*\}\}"),
    re.compile(r"\{\{node [^}]*\}\}"),
    re.compile(r"\[\[[^\]]*\]\]"),
    re.compile(r"\[Op:[^\]]*\]( name: \S*)?"),
    re.compile(r"(\bon )?/job:[\w-]+/replica:\d+/task:\d+/device:[\w-]+:\d+"),
    re.compile(r"\bby allocator \w+"),
)
# Lines of a TensorFlow message that say where, not what.
_TF_BOILERPLATE = ("Graph execution error", "Detected at node",
                   "Original stack trace", "File \"", "Stack trace")
_MAX_REASON = 200


def quoted(name) -> str:
  """`name` as typed when it is plain, else quoted with escapes (`repr`)."""
  name = str(name)
  return name if _PLAIN.fullmatch(name) else repr(name)


def one_line(text: str) -> str:
  """`text` with line breaks and other control characters escaped."""
  return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def shorten(text: str, limit: int = _MAX_REASON) -> str:
  """At most `limit` characters, cut at a word boundary."""
  text = " ".join(text.split())
  if len(text) <= limit:
    return text
  cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
  return cut + " ..."


def reason(error: BaseException) -> str:
  """What went wrong, for a user: the OS's words for an OSError
  ("No space left on device"), TensorFlow's message without its op, node
  and device names, else the exception's first line."""
  strerror = getattr(error, "strerror", None)
  if isinstance(error, OSError) and strerror:
    return strerror
  text = str(getattr(error, "message", None) or error)
  for noise in _TF_NOISE:
    text = noise.sub("", text)
  lines = [line.strip(" ;:,\t") for line in text.splitlines()]
  lines = [line for line in lines
           if line and not line.startswith(_TF_BOILERPLATE)]
  if not lines:
    return type(error).__name__
  # TensorFlow's file errors read "<path>; <the OS's reason>": the reason is
  # what matters (the caller names the directory), and a long temporary
  # path would push it out of sight.
  path, _, os_reason = lines[0].rpartition("; ")
  if path and os_reason and ("/" in path) and " " not in path:
    return shorten(os_reason)
  return shorten(lines[0])


def fail(message: str, status: int = EXIT_USAGE) -> None:
  """Prints `error: <message>` as one line on stderr and exits."""
  print(f"error: {one_line(str(message))}", file=sys.stderr, flush=True)
  sys.exit(status)
