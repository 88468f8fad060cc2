"""Your own arrays: a NumPy `.npz` laid out as Keras' `mnist.npz`.

uint8 `x_train`, `x_test` ([N, H, W] or [N, H, W, C]) and, optionally,
integer `y_train`, `y_test` (one label per image). Shapes, dtypes and label
counts are read from the archive's headers and checked before anything is
loaded; images stay uint8, one copy.
"""

from __future__ import annotations

import zipfile
from typing import Optional

import numpy as np

from engine.data import arrays
from engine.data.images import (Conversion, check_fits_in_memory, chunk_rows,
                                convert, converted_shape)
from engine.errors import DataError, quoted, reason


def _npz_header(archive: zipfile.ZipFile, name: str, path: str):
  """(shape, dtype) of `name` in an .npz, read from its header (no loading),
  or None if the archive has no such array."""
  if name + ".npy" not in archive.namelist():
    return None
  try:
    with archive.open(name + ".npy") as f:
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)
      shape, _, dtype = read_header(f)
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"--data_dir={quoted(path)}: array {name!r} is not "
                    f"readable ({reason(e)})") from None
  return shape, dtype


def _npz_images_shape(archive: zipfile.ZipFile, name: str, path: str) -> tuple:
  header = _npz_header(archive, name, path)
  if header is None:
    raise DataError(f"--data_dir={quoted(path)}: has no array {name!r} (an "
                    ".npz laid out as Keras' mnist.npz holds x_train, x_test "
                    "and optionally y_train, y_test)")
  shape, dtype = header
  return arrays.check_images(f"--data_dir={quoted(path)}: {name}", dtype,
                             shape)


def _npz_labels_header(archive: zipfile.ZipFile, name: str, path: str,
                       count: int) -> bool:
  """Checks the labels `name` fit `count` images; False if there are none."""
  header = _npz_header(archive, name, path)
  if header is None:
    return False
  shape, dtype = header
  arrays.check_labels_header(f"--data_dir={quoted(path)}: {name}", dtype,
                             shape, count, f"x_{name[2:]}")
  return True


def images_shapes(path: str) -> dict:
  """{split: shape} of the archive's x_train and x_test, from their headers,
  checked (both images, of one shape).

  Raises:
    DataError: If the file is not a zip, or an array is missing or wrong.
  """
  try:
    archive = zipfile.ZipFile(path)
  except (OSError, zipfile.BadZipFile) as e:
    raise DataError(f"--data_dir={quoted(path)}: not a readable .npz "
                    f"({reason(e)})") from None
  with archive:
    shapes = {split: _npz_images_shape(archive, f"x_{split}", path)
              for split in ("train", "test")}
  if shapes["train"][1:] != shapes["test"][1:]:
    raise DataError(f"--data_dir={quoted(path)}: x_train images are "
                    f"{shapes['train'][1:]} but x_test images are "
                    f"{shapes['test'][1:]}")
  return shapes


def load_npz(path: str, conversion: Conversion,
             max_train_examples: Optional[int] = None,
             memory_limit_bytes: Optional[int] = None) -> dict:
  """Reads an .npz laid out as Keras' mnist.npz (see the module docstring).

  Raises:
    DataError: Naming the file and the array that is missing, of the wrong
      dtype or shape, or whose labels do not match its images.
  """
  shapes = images_shapes(path)
  with zipfile.ZipFile(path) as archive:
    labelled = {split: _npz_labels_header(archive, f"y_{split}", path,
                                          shapes[split][0])
                for split in ("train", "test")}
  count = (min(shapes["train"][0], max_train_examples or shapes["train"][0])
           + shapes["test"][0])
  check_fits_in_memory(path, count,
                       converted_shape(shapes["train"][1:], conversion, path),
                       memory_limit_bytes)
  loaded = {}
  try:
    with np.load(path, allow_pickle=False) as values:
      for split in ("train", "test"):
        images = values[f"x_{split}"]
        if split == "train" and max_train_examples:
          images = images[:max_train_examples]
        if images.ndim == 3:
          images = images[..., np.newaxis]
        images = convert(images, conversion, path)
        labels = np.full(len(images), -1, np.int64)
        if labelled[split]:
          labels = arrays.checked_labels(
              f"--data_dir={quoted(path)}: y_{split}",
              values[f"y_{split}"].reshape(-1)[:len(images)])
        loaded[f"{split}_images"] = images
        loaded[f"{split}_labels"] = labels
  except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"--data_dir={quoted(path)}: not a readable .npz "
                    f"({reason(e)})") from None
  return loaded


def stream_npz(path: str, conversion: Conversion, rows: int = 4096):
  """The splits `load_npz` reads, as chunks of (images, labels): each
  image array is read from its zip member a chunk at a time (labels, 8
  bytes an image, whole). Checked as `load_npz` checks them.

  Returns:
    ({split: iterator of chunks}, image shape after `conversion`).
  """
  shapes = images_shapes(path)
  labels = {split: load_npz_labels(path, split, shapes[split][0])
            for split in ("train", "test")}

  converted = converted_shape(shapes["train"][1:], conversion, path)
  rows = chunk_rows(shapes["train"][1:], converted, most=rows)

  def chunks(split):
    shape = shapes[split]
    row_bytes = int(np.prod(shape[1:]))
    try:
      with zipfile.ZipFile(path) as archive, archive.open(
          f"x_{split}.npy") as f:
        version = np.lib.format.read_magic(f)
        _, fortran, _ = (np.lib.format.read_array_header_1_0(f)
                         if version == (1, 0) else
                         np.lib.format.read_array_header_2_0(f))
        if fortran:
          raise DataError(f"--data_dir={quoted(path)}: x_{split} is in "
                          "Fortran order; save it in C order to stream it")
        for start in range(0, shape[0], rows):
          count = min(rows, shape[0] - start)
          data = f.read(count * row_bytes)
          if len(data) < count * row_bytes:
            raise DataError(f"--data_dir={quoted(path)}: x_{split} is "
                            "truncated")
          images = np.frombuffer(data, np.uint8).reshape(count, *shape[1:])
          if images.ndim == 3:
            images = images[..., np.newaxis]
          yield (convert(images, conversion, path),
                 labels[split][start:start + count])
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
      raise DataError(f"--data_dir={quoted(path)}: not a readable .npz "
                      f"({reason(e)})") from None

  first = next(chunks("test"))[0]
  return {split: chunks(split) for split in ("train", "test")}, (
      first.shape[1:])


def load_npz_labels(path: str, split: str, count: int) -> np.ndarray:
  """The labels of `split` (int64 [count]; -1 where the archive has none),
  checked as `load_npz` checks them."""
  with zipfile.ZipFile(path) as archive:
    labelled = _npz_labels_header(archive, f"y_{split}", path, count)
  if not labelled:
    return np.full(count, -1, np.int64)
  with np.load(path, allow_pickle=False) as values:
    labels = values[f"y_{split}"]
  return arrays.checked_labels(f"--data_dir={quoted(path)}: y_{split}",
                               labels)
