"""What a dataset may be read from: regular files and directories only.

A FIFO blocks the read that opens it until something writes to it, and a
device (`data.npz -> /dev/zero`) never ends; both are refused by their type,
from `os.stat` (which follows links), before anything opens them.
"""

from __future__ import annotations

import os
import stat

from engine.errors import DataError, quoted

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def kind(path: str) -> str | None:
  """What `path` is when it is neither a regular file nor a directory (as
  its links lead: "a character device, via a link to /dev/zero"); None for a
  file, a directory, or a path that does not exist (others say so)."""
  try:
    mode = os.stat(path).st_mode
  except (OSError, ValueError):
    return None
  if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
    return None
  what = next((name for test, name in _KINDS if test(mode)),
              f"a special file (mode {stat.filemode(mode)})")
  if os.path.islink(path):
    what += f", via a link to {quoted(os.path.realpath(path))}"
  return what


def check_readable(path: str | None, name: str | None = None) -> None:
  """Raises a DataError if `path` is there but is neither a regular file nor
  a directory. `name` says what the line starts with (default: the path)."""
  what = path and kind(path)
  if what:
    raise DataError(f"{name or quoted(path)}: {what}, not a file or a "
                    "directory; pass a regular file or a directory")
