"""Your own images: a folder of image files (and what every source shares:
bringing images to one shape, and the memory check).

A folder holds PNG, JPEG, BMP or GIF files (what Keras'
`image_dataset_from_directory` reads, decoded the same way, with
`tf.io.decode_image`). Sub-folders are classes (their sorted names give the
labels); image files directly in the folder have no labels (-1). The test
split is a `test/` sub-folder (then `train/` holds the rest, or the folder
itself does), or else a held-out `--test_fraction` drawn with `--seed`.
Images are taken in the order of their file names (then folders), so a
dataset written with numbered names keeps its order.

Images stay uint8, one copy, like every source. Before anything is
decoded, the bytes the run will hold are estimated and a dataset that does not
fit is refused in one line (`check_fits_in_memory`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np

from engine.data import paths
from engine.data.memory import (MEMORY_FRACTION,  # noqa: F401
                                 available_memory_bytes, check_fits_in_memory)
from engine.errors import DataError, quoted, reason

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# About how much of a dataset a streamed chunk holds (`chunk_rows`).
CHUNK_BYTES = 64 << 20


@dataclasses.dataclass(frozen=True)
class Conversion:
  """How images are brought to one shape on load.

  Attributes:
    image_size: (height, width) to resize to, after a center crop to that
      aspect ratio (None: keep the files' size, which must agree).
    channels: 1 or 3 (None: keep the files', which must agree).
  """

  image_size: Optional[tuple[int, int]] = None
  channels: Optional[int] = None


def _image_files(directory: str) -> list[tuple[str, Optional[str]]]:
  """(path, class name or None) of every image under `directory`, in order.

  Class sub-folders give labels; files directly in `directory` have none.
  `train/` and `test/` folders are splits, not classes, and are skipped.
  """
  found = []
  for entry in sorted(os.listdir(directory)):
    path = os.path.join(directory, entry)
    if os.path.isdir(path) and entry not in ("train", "test"):
      found += [(os.path.join(path, name), entry)
                for name in sorted(os.listdir(path))
                if name.lower().endswith(IMAGE_EXTENSIONS)]
    elif entry.lower().endswith(IMAGE_EXTENSIONS):
      found.append((path, None))
  # File names first: numbered files keep their order across class folders.
  return sorted(found, key=lambda item: (os.path.basename(item[0]), item[0]))


def _decode(path: str, conversion: Conversion) -> np.ndarray:
  import tensorflow as tf  # Only this source decodes images.

  paths.check_readable(path)  # A FIFO named x.png would block the open.
  try:
    with open(path, "rb") as f:
      encoded = f.read()
    image = tf.io.decode_image(encoded, channels=conversion.channels or 0,
                               expand_animations=False)
  except (OSError, tf.errors.OpError) as e:
    raise DataError(f"{quoted(path)}: not a readable image ({reason(e)}); "
                    "remove it or convert it to PNG/JPEG") from None
  if conversion.image_size:
    image = _crop_and_resize(image, conversion.image_size)
  return image.numpy()


def _crop_and_resize(image, size: tuple[int, int]):
  """Center-crops `image` to the aspect ratio of `size`, then resizes."""
  import tensorflow as tf

  height, width = int(image.shape[0]), int(image.shape[1])
  target_h, target_w = size
  crop_h = min(height, round(width * target_h / target_w))
  crop_w = min(width, round(height * target_w / target_h))
  top, left = (height - crop_h) // 2, (width - crop_w) // 2
  image = image[top:top + crop_h, left:left + crop_w]
  if (crop_h, crop_w) != (target_h, target_w):
    image = tf.image.resize(image, size, method="area", antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return image


def _decode_all(items, conversion: Conversion, source: str,
                reference: tuple[str, tuple]):
  """(uint8 images [N, H, W, C], the class name of each); every image must
  have the shape of `reference` = (its path, its shape)."""
  first_path, shape = reference
  images = np.empty((len(items), *shape), np.uint8)
  for i, (path, _) in enumerate(items):
    image = _decode(path, conversion)
    if image.shape != shape:
      what = "channels" if image.shape[:2] == shape[:2] else "sizes"
      fix = "--channels=1|3" if what == "channels" else "--image_size=H,W"
      raise DataError(
          f"--data_dir={quoted(source)}: images of mixed {what}: "
          f"{quoted(first_path)} is {'x'.join(map(str, shape))}, "
          f"{quoted(path)} is "
          f"{'x'.join(map(str, image.shape))}; pass {fix}")
    images[i] = image
  return images, [label for _, label in items]


def _split_items(directory: str, test_fraction: float, seed: int,
                 max_train_examples: Optional[int]) -> dict:
  """{split: [(path, class name)]} of a folder, from its listing alone."""
  test_dir = os.path.join(directory, "test")
  if os.path.isdir(test_dir):
    train_dir = os.path.join(directory, "train")
    train_items = _image_files(train_dir if os.path.isdir(train_dir)
                               else directory)
    test_items = _image_files(test_dir)
  else:
    items = _image_files(directory)
    held_out = np.random.default_rng(seed).permutation(len(items))[
        :int(round(len(items) * test_fraction))]
    is_test = np.zeros(len(items), bool)
    is_test[held_out] = True
    train_items = [item for item, t in zip(items, is_test) if not t]
    test_items = [item for item, t in zip(items, is_test) if t]
  if not train_items or not test_items:
    raise DataError(
        f"--data_dir={quoted(directory)}: no "
        f"{'training' if not train_items else 'test'}"
        f" images ({', '.join(IMAGE_EXTENSIONS)} files, in class sub-folders "
        "or directly in it; a test/ sub-folder or --test_fraction for the "
        "test split)")
  if max_train_examples:
    train_items = train_items[:max_train_examples]
  return {"train": train_items, "test": test_items}


def folder_extent(directory: str, conversion: Conversion,
                  test_fraction: float, seed: int,
                  max_train_examples: Optional[int]) -> tuple[dict, tuple]:
  """({split: image count}, image shape) that `load_folder` would hold,
  without decoding what it resizes: with --image_size and --channels
  nothing is decoded, else the first image only, at its own size."""
  splits = _split_items(directory, test_fraction, seed, max_train_examples)
  counts = {split: len(items) for split, items in splits.items()}
  if conversion.image_size and conversion.channels:
    return counts, (*conversion.image_size, conversion.channels)
  first = _decode(splits["train"][0][0], Conversion(None, conversion.channels))
  return counts, converted_shape(first.shape, conversion)


def _folder_splits(directory: str, conversion: Conversion,
                   test_fraction: float, seed: int,
                   max_train_examples: Optional[int]):
  """({split: [(path, class name)]}, the reference (path, shape), classes)."""
  splits = _split_items(directory, test_fraction, seed, max_train_examples)
  train_items, test_items = splits["train"], splits["test"]
  reference = (train_items[0][0],
               tuple(_decode(train_items[0][0], conversion).shape))
  classes = sorted({label for _, label in train_items + test_items
                    if label is not None})
  return splits, reference, classes


def _decoded(items, conversion, directory, reference, classes):
  images, names = _decode_all(items, conversion, directory, reference)
  return images, np.array([classes.index(n) if n is not None else -1
                           for n in names], np.int64)


def load_folder(directory: str, conversion: Conversion, test_fraction: float,
                seed: int, max_train_examples: Optional[int] = None,
                memory_limit_bytes: Optional[int] = None) -> dict:
  """Reads a folder of images into the arrays of an `ImageDataset` (and the
  class names: its sorted class folders' names, or None without any).

  Raises:
    DataError: For an empty folder, an unreadable image (named), mixed sizes
      or channels (two files named), or a dataset too large for memory.
  """
  splits, reference, classes = _folder_splits(
      directory, conversion, test_fraction, seed, max_train_examples)
  check_fits_in_memory(directory, sum(map(len, splits.values())),
                       reference[1], memory_limit_bytes)
  arrays = {"class_names": tuple(classes) or None}
  for split, items in splits.items():
    arrays[f"{split}_images"], arrays[f"{split}_labels"] = _decoded(
        items, conversion, directory, reference, classes)
  return arrays


def stream_folder(directory: str, conversion: Conversion,
                  test_fraction: float, seed: int, chunk: int = 4096):
  """The splits `load_folder` reads, as chunks of (images, labels) decoded
  one chunk at a time (what `convert_dataset` writes: memory does not grow
  with the folder).

  Returns:
    ({split: iterator of chunks}, image shape).
  """
  splits, reference, classes = _folder_splits(directory, conversion,
                                              test_fraction, seed, None)

  chunk = chunk_rows(reference[1], most=chunk)

  def chunks(items):
    for start in range(0, len(items), chunk):
      yield _decoded(items[start:start + chunk], conversion, directory,
                     reference, classes)
  return {split: chunks(items) for split, items in splits.items()}, (
      reference[1])


def chunk_rows(*shapes: tuple, most: int = 1 << 62) -> int:
  """Images a streamed chunk holds: about CHUNK_BYTES of the largest of
  `shapes` (an image as read and as converted), at most `most`, at least 1."""
  largest = max(1, *(int(np.prod(shape)) for shape in shapes))
  return max(1, min(most, CHUNK_BYTES // largest))


def converted_shape(shape: tuple, conversion: Conversion,
                    source: str = "the data") -> tuple:
  """The (rows, cols, channels) that `conversion` makes of images of
  `shape` ((rows, cols) or (rows, cols, channels)), computed, not done.

  Raises:
    DataError: If --channels asks for a conversion there is none for (only
      grey and RGB convert into each other).
  """
  rows, cols, *channels = tuple(shape)
  channels = channels[0] if channels else 1
  wanted = conversion.channels
  if wanted and channels != wanted and channels not in (1, 3):
    raise DataError(f"--channels={wanted}: {quoted(source)} holds "
                    f"{channels}-channel images, and only grey and RGB "
                    "images convert; leave out --channels or convert them "
                    "first")
  return (*(conversion.image_size or (rows, cols)), wanted or channels)


def convert(images: np.ndarray, conversion: Conversion,
            source: str = "the data") -> np.ndarray:
  """Applies `conversion` to in-memory uint8 images [N, H, W, C], into one
  array allocated once (no list of images stacked into a second copy)."""
  import tensorflow as tf

  if not conversion.image_size and not conversion.channels:
    return images
  shape = converted_shape(images.shape[1:], conversion, source)
  out = np.empty((len(images), *shape), np.uint8)
  for i, image in enumerate(images):
    image = tf.constant(image)
    if conversion.channels and image.shape[-1] != conversion.channels:
      image = (tf.image.rgb_to_grayscale(image) if conversion.channels == 1
               else tf.image.grayscale_to_rgb(image))
    if conversion.image_size:
      image = _crop_and_resize(image, conversion.image_size)
    out[i] = image.numpy()
  return out
