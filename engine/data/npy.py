"""A directory of `.npy` arrays, as `convert_dataset` reads it.

`x_train.npy`, `x_test.npy` and, optionally, `y_train.npy`, `y_test.npy`:
the arrays of a Keras-style `.npz` (`engine.data.npz`) saved one by one,
checked by the same rules (`engine.data.arrays`), so a directory converts
exactly when its arrays saved as an `.npz` would load. The images are read
in row ranges, never whole; the labels (8 bytes an image) whole.
"""

from __future__ import annotations

import os

import numpy as np

from engine.data import arrays
from engine.data import paths
from engine.errors import DataError, quoted, reason

FILES = ("x_train.npy", "x_test.npy")


def _header(path: str) -> tuple:
  """(shape, fortran order, dtype, data offset) from a `.npy` header."""
  paths.check_readable(path)  # A FIFO named y_train.npy would block.
  try:
    with open(path, "rb") as f:
      version = np.lib.format.read_magic(f)
      shape, fortran, dtype = (
          np.lib.format.read_array_header_1_0(f) if version == (1, 0)
          else np.lib.format.read_array_header_2_0(f))
      return tuple(shape), fortran, dtype, f.tell()
  except (OSError, ValueError, EOFError, SyntaxError) as e:
    raise DataError(f"{quoted(path)}: not a readable .npy ({reason(e)})"
                    ) from None


class NpyImages:
  """The images of a `.npy` file, read in row ranges by plain file reads (a
  memory map would count every page read in the process's resident set).

  Raises:
    DataError: If the file is not a readable uint8 [N, H, W(, C)] array in
      C order, of the length its header promises.
  """

  def __init__(self, path: str):
    self.path = path
    shape, fortran, dtype, self.offset = _header(path)
    self.shape = arrays.check_images(quoted(path), dtype, shape)
    if fortran:
      raise DataError(f"{quoted(path)}: in Fortran order; save it in C "
                      "order (np.ascontiguousarray) to convert it")
    self.row_bytes = int(np.prod(self.shape[1:]))
    expected = self.offset + self.shape[0] * self.row_bytes
    if os.path.getsize(path) != expected:
      raise DataError(f"{quoted(path)}: {os.path.getsize(path)} bytes, but "
                      f"its header promises {expected} (truncated?)")

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, rows: slice):
    start, stop, _ = rows.indices(len(self))
    with open(self.path, "rb") as f:
      f.seek(self.offset + start * self.row_bytes)
      data = f.read(max(0, stop - start) * self.row_bytes)
    return np.frombuffer(data, np.uint8).reshape(-1, *self.shape[1:])


def load_labels(path: str, count: int, images: str) -> np.ndarray:
  """The labels in `path` for `count` images (named `images`), int64 [N],
  checked as the `.npz` loader checks them: the header first, then the
  values (a uint64 near 2**64 is refused, not wrapped to -1)."""
  shape, _, dtype, _ = _header(path)
  arrays.check_labels_header(quoted(path), dtype, shape, count, images)
  try:
    labels = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError) as e:
    raise DataError(f"{quoted(path)}: not a readable .npy ({reason(e)})"
                    ) from None
  return arrays.checked_labels(quoted(path), labels)


def is_npy_dir(path: str | None) -> bool:
  """Whether `path` is a directory of `.npy` arrays (holds both images)."""
  return bool(path) and all(os.path.isfile(os.path.join(path, name))
                            for name in FILES)


def npy_arrays(directory: str) -> dict:
  """{split: (NpyImages, int64 labels)} of a directory of `.npy` arrays,
  read lazily, checked (-1 labels for a split without a labels file).

  Raises:
    DataError: Naming the file whose dtype, shape or values are wrong, or
      the two splits whose image shapes differ.
  """
  found = {}
  for split in ("train", "test"):
    images = NpyImages(os.path.join(directory, f"x_{split}.npy"))
    label_path = os.path.join(directory, f"y_{split}.npy")
    if os.path.lexists(label_path):
      labels = load_labels(label_path, len(images), f"x_{split}.npy")
    else:
      labels = np.full(len(images), arrays.UNLABELLED, np.int64)
    found[split] = (images, labels)
  train, test = found["train"][0], found["test"][0]
  if train.shape[1:] != test.shape[1:]:
    raise DataError(f"{quoted(test.path)}: images are {test.shape[1:]} but "
                    f"{quoted(train.path)}'s are {train.shape[1:]}; give "
                    "both splits images of one shape")
  return found
