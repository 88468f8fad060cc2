"""File access through `tf.io.gfile`, so any TensorFlow filesystem works.

Model dirs, export dirs, figures, configs and metrics may live on local disk,
`gs://`, `hdfs://` or `ram://` (TensorFlow's in-memory filesystem, which the
tests use). Whole files are written to a temporary name and renamed into
place where the filesystem can rename, so a reader never sees half a file;
where it cannot (some object stores), they are written in place.
"""

from __future__ import annotations

import posixpath
import uuid

import tensorflow as tf

gfile = tf.io.gfile

# Errors a filesystem raises for what it does not support or cannot do.
_UNSUPPORTED = (tf.errors.UnimplementedError,)


def join(*parts: str) -> str:
  """Joins path parts with '/', which every TensorFlow filesystem uses."""
  return posixpath.join(*parts)


def is_local(path: str) -> bool:
  """A plain local path (no `scheme://`)."""
  return "://" not in path


def temporary_name(path: str) -> str:
  """A name beside `path` for writing it: the engine's own (no user file has
  it) and unique (two writers of one file never share it)."""
  return f"{path}.vae-engine-tmp-{uuid.uuid4().hex[:8]}"


def write_atomically(path: str, content: str | bytes) -> None:
  """Writes a whole file: to a `temporary_name`, then renamed over `path`."""
  mode = "wb" if isinstance(content, bytes) else "w"
  temporary = temporary_name(path)
  try:
    with gfile.GFile(temporary, mode) as f:
      f.write(content)
    try:
      gfile.rename(temporary, path, overwrite=True)
    except _UNSUPPORTED:
      with gfile.GFile(path, mode) as f:
        f.write(content)
  finally:
    if gfile.exists(temporary):
      gfile.remove(temporary)


def create_marker(path: str) -> None:
  """Creates an empty file whose existence is all it says.

  Not written through a temporary name: a kill part-way must leave either
  the marker or nothing, never a stray temporary in the marked directory
  (which would make the directory look like someone else's).
  """
  with gfile.GFile(path, "w") as f:
    f.write("")  # GFile creates the file on its first write.


def append_line(path: str, line: str) -> None:
  """Appends one line; filesystems without append get the file rewritten."""
  try:
    with gfile.GFile(path, "a") as f:
      f.write(line + "\n")
  except _UNSUPPORTED:
    existing = read_text(path) if gfile.exists(path) else ""
    write_atomically(path, existing + line + "\n")


def read_text(path: str) -> str:
  with gfile.GFile(path, "r") as f:
    return f.read()


def remove_tree(path: str) -> None:
  """Removes a directory tree, if it is there."""
  try:
    gfile.rmtree(path)
  except tf.errors.NotFoundError:
    pass


def move_tree(source: str, destination: str) -> None:
  """Moves a directory tree to a path that does not exist yet.

  Local directories are renamed (atomic). Other filesystems have no atomic
  directory rename (and `ram://` renames a directory without its contents),
  so files are moved one by one, then the source is removed: a reader may
  see a partial tree only while this runs, never a partial file.
  """
  gfile.makedirs(posixpath.dirname(destination))
  if is_local(source) and is_local(destination):
    gfile.rename(source, destination)
    return
  for directory, _, names in gfile.walk(source):
    target = join(destination, directory[len(source):].lstrip("/"))
    gfile.makedirs(target)
    for name in names:
      path = join(directory, name)
      # `ram://` lists by prefix: `assets.extra/x` shows up in `assets` as
      # a file `.extra/x` that does not exist.
      if gfile.exists(path):
        gfile.rename(path, join(target, name), overwrite=True)
  remove_tree(source)


def write_npy_chunks(path: str, shape: tuple, dtype, chunks) -> None:
  """Writes an `.npy` of `shape` from row chunks, streaming (memory does not
  grow with the array), to a `temporary_name` and then renamed over
  `path`."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  dtype = np.dtype(dtype)
  temporary = temporary_name(path)
  rows = 0
  try:
    with gfile.GFile(temporary, "wb") as f:
      np.lib.format.write_array_header_1_0(f, {
          "descr": np.lib.format.dtype_to_descr(dtype),
          "fortran_order": False, "shape": tuple(shape)})
      for chunk in chunks:
        chunk = np.ascontiguousarray(chunk, dtype)
        f.write(chunk.tobytes())
        rows += len(chunk)
    if rows != shape[0]:
      raise ValueError(f"{rows} rows written for an array of {shape[0]}")
    gfile.rename(temporary, path, overwrite=True)
  except BaseException:
    if gfile.exists(temporary):
      gfile.remove(temporary)
    raise
