"""What a user's image and label arrays must be, checked in one place.

The `.npz` loader (`engine.data.npz`), `convert_dataset`'s `.npy` arrays
(`engine.data.npy`) and the shard writer apply these same rules, so a
conversion accepts exactly what training would:

* images: uint8 [N, H, W] or [N, H, W, C], N > 0, no empty side;
* labels: an integer dtype (signed or unsigned; not bool, float, strings or
  objects), [N] or [N, 1], one per image, each a class index
  0 <= y < 2**31. An image without a label is -1 in the engine's own arrays
  (a folder's loose files, a split without labels); a user's label array
  never holds -1 or any other negative value.

Shapes and dtypes are checked from headers, before anything is loaded
(`check_images`, `check_labels_header`); values once read (`checked_labels`).
"""

from __future__ import annotations

import numpy as np

from engine.errors import DataError

# Labels are class indices that a conditional model one-hot encodes; an int32
# holds any of them (and 2**31 classes is far past any model's memory).
LABEL_LIMIT = 2**31
UNLABELLED = -1


def check_images(where: str, dtype, shape: tuple) -> tuple:
  """`shape`, if `dtype` and `shape` are those of images (see the module
  docstring); `where` names the array ("--data_dir=D: x_train").

  Raises:
    DataError: Saying what is wrong and what images must be.
  """
  shape = tuple(int(d) for d in shape)
  if np.dtype(dtype) != np.uint8 or len(shape) not in (3, 4) or (
      0 in shape[1:]):
    raise DataError(f"{where} is {np.dtype(dtype)} {shape}; images must be "
                    "uint8 [N, H, W] or [N, H, W, C]")
  if not shape[0]:
    raise DataError(f"{where} holds no images")
  return shape


def check_labels_header(where: str, dtype, shape: tuple, count: int,
                        images: str) -> None:
  """Checks labels of `dtype` and `shape` can label `count` images (the
  array named `images`), before they are read.

  Raises:
    DataError: For a dtype that is not an integer one, a shape other than
      [N] or [N, 1], or another number of labels than images.
  """
  dtype, shape = np.dtype(dtype), tuple(int(d) for d in shape)
  if dtype.kind not in "iu":
    raise DataError(f"{where} is {dtype}; labels must be integers (class "
                    "indices 0, 1, ...)")
  if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
    raise DataError(f"{where} has shape {shape}; labels must be [N] or "
                    "[N, 1]")
  if shape[0] != count:
    raise DataError(f"{where} holds {shape[0]} labels for the {count} images "
                    f"of {images}; give one label per image")


def checked_labels(where: str, labels: np.ndarray,
                   unlabelled: bool = False) -> np.ndarray:
  """`labels` as int64 [N], once every value is a class index (or, with
  `unlabelled`, the engine's own -1 for an image without a label).

  Raises:
    DataError: Naming the first value out of range (compared exactly: a
      uint64 near 2**64 is not wrapped to a negative int64).
  """
  labels = np.asarray(labels)
  if labels.dtype.kind not in "iu":
    raise DataError(f"{where} is {labels.dtype}; labels must be integers "
                    "(class indices 0, 1, ...)")
  labels = labels.reshape(-1)
  lowest = UNLABELLED if unlabelled else 0
  if labels.size:
    # Python integers: exact for every int64 and uint64 value.
    low, high = int(labels.min()), int(labels.max())
    if low < lowest or high >= LABEL_LIMIT:
      raise DataError(f"{where} holds the label {low if low < lowest else high}"
                      "; labels are class indices 0, 1, ... (below 2**31)")
  return labels.astype(np.int64)
