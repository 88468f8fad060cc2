"""Finds a dataset and loads it into memory as uint8 arrays.

One rule picks the source. `--data_dir` given: an `.npz` file is read as
Keras' mnist.npz; a directory holding the four IDX files is read as IDX; any
other directory as a folder of images (`engine.data.images`). No
`--data_dir`: a known local copy of `--dataset` (Debian's
`dataset-fashion-mnist`), else tensorflow-datasets by name, whose download is
bounded in time so an offline machine gets a clear error instead of minutes
of retries. `--image_size` and `--channels` convert any source's images.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from engine.config import DataConfig
from engine.data import idx
from engine.data import images
from engine.data import npz
from engine.data import indexed
from engine.data import paths
from engine.data import shards
from engine.data import tfds_source
from engine.errors import DataError, quoted

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

KNOWN_LOCAL_COPIES = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist",),
}
# IDX files hold label numbers only; a known copy's names come from here.
KNOWN_CLASS_NAMES = {
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """A train/test split of images in memory.

  Attributes:
    train_images: uint8 array [N, rows, cols, channels], or
      `indexed.IndexedImages` read from disk; None once a run has moved it
      into the tensor its pipeline reads (one copy in memory).
    train_labels: int64 array [N].
    test_images: uint8 array [M, rows, cols, channels] (or, as above,
      `indexed.IndexedImages`).
    test_labels: int64 array [M].
    source: Where it came from, for the log.
    class_names: The name of each label, where the source has them (TFDS
      label names, an image folder's class folders, Fashion-MNIST's known
      copy); None where labels are bare numbers.
  """

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  source: str
  class_names: tuple[str, ...] | None = None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    # Both splits have it (checked on load); the training array may have
    # been handed over to a tensor (see engine.run.build).
    return tuple(self.test_images.shape[1:])

  def check_shape(self, expected: tuple, model: str) -> None:
    """Raises a DataError unless the images have the shape a trained model
    (`model`: the flag that named it) takes."""
    if tuple(expected) != self.image_shape:
      shape = "x".join(str(d) for d in expected)
      raise DataError(
          f"{model}: takes {shape} images, but {quoted(self.source)} holds "
          f"{'x'.join(str(d) for d in self.image_shape)}; pass the data it "
          f"was trained on, or --image_size/--channels to make them {shape}")


def load(config: DataConfig, seed: int = 0) -> ImageDataset:
  """Loads the dataset `config` names from the source the rule picks.

  Args:
    config: The data settings.
    seed: Draws the held-out test images of a folder without test/.

  Raises:
    DataError: If no source has it, or a file is malformed.
  """
  conversion = images.Conversion(config.image_size, config.channels)
  path = config.data_dir
  check_data_dir(path)
  if path and os.path.exists(path) and not os.path.isdir(path) and (
      not path.endswith(".npz")):
    raise DataError(f"--data_dir={quoted(path)}: a file, but not an .npz; "
                    "pass the directory that holds the images (or the IDX "
                    "files), or an .npz laid out as Keras' mnist.npz")
  if shards.is_sharded(path):
    if conversion.image_size or conversion.channels:
      raise DataError(f"--data_dir={quoted(path)}: a converted dataset is "
                      "read as it was written; pass --image_size/--channels "
                      "to convert_dataset instead")
    return ImageDataset(**shards.open_dataset(path,
                                              config.max_train_examples))
  if path and os.path.isfile(path) and path.endswith(".npz"):
    dataset = ImageDataset(source=path, **npz.load_npz(
        path, conversion, config.max_train_examples))
  elif path and _find_idx_files(path) is None and not _has_idx_files(path):
    dataset = ImageDataset(source=path, **images.load_folder(
        path, conversion, config.test_fraction, seed,
        config.max_train_examples))
  elif path:
    dataset = _converted(load_idx_dir(path), conversion)
  else:
    local = [d for d in KNOWN_LOCAL_COPIES.get(config.dataset, ())
             if _find_idx_files(d) is not None]
    if local:
      dataset = dataclasses.replace(
          load_idx_dir(local[0]),
          class_names=KNOWN_CLASS_NAMES.get(config.dataset))
    else:
      dataset = load_tfds(config.dataset, config.download_timeout_s,
                          config.tfds_data_dir,
                          limit=config.max_train_examples)
    if not isinstance(dataset.train_images, indexed.IndexedImages):
      dataset = _converted(dataset, conversion)
    elif conversion.image_size or conversion.channels:
      raise DataError(f"--dataset={config.dataset}: read by index as it was "
                      "prepared; --image_size/--channels need "
                      "convert_dataset (which converts as it copies)")
  if config.max_train_examples and not isinstance(dataset.train_images,
                                                  indexed.IndexedImages):
    dataset = dataclasses.replace(
        dataset,
        train_images=dataset.train_images[:config.max_train_examples],
        train_labels=dataset.train_labels[:config.max_train_examples])
  for split in ("train", "test"):
    if not len(getattr(dataset, f"{split}_images")):
      raise DataError(f"{quoted(dataset.source)}: holds no {split} images")
  return dataset


def check_data_dir(path: str | None) -> None:
  """Raises a DataError unless `path` is nothing, or a regular file or a
  directory (not a FIFO, which would block the read, or a device)."""
  paths.check_readable(path, f"--data_dir={quoted(path)}")


def _converted(dataset: ImageDataset,
               conversion: images.Conversion) -> ImageDataset:
  return dataclasses.replace(
      dataset,
      train_images=images.convert(dataset.train_images, conversion,
                                  dataset.source),
      test_images=images.convert(dataset.test_images, conversion,
                                 dataset.source))


def idx_files(path: str | None) -> dict | None:
  """The four IDX files of a directory by role (None: not an IDX dir)."""
  return _find_idx_files(path) if path and os.path.isdir(path) else None


def is_image_folder(path: str | None) -> bool:
  """Whether the rule reads `path` as a folder of images (a directory that
  is neither converted shards nor IDX)."""
  return bool(path) and os.path.isdir(path) and not shards.is_sharded(
      path) and _find_idx_files(path) is None and not _has_idx_files(path)


def _has_idx_files(directory: str) -> bool:
  """Any IDX file at all: then missing ones are an IDX error, not a folder."""
  return os.path.isdir(directory) and any(
      name.startswith(tuple(IDX_FILES.values()))
      for name in os.listdir(directory))


def _find_idx_files(directory: str) -> dict[str, str] | None:
  """Maps each of the four IDX roles to its path, or None if one is missing.

  Raises:
    DataError: If a raw and a `.gz` copy of one file differ (which one the
      user meant cannot be known; equal copies are fine).
  """
  found = {}
  for role, stem in IDX_FILES.items():
    copies = [os.path.join(directory, name) for name in (stem + ".gz", stem)
              if os.path.isfile(os.path.join(directory, name))]
    if not copies:
      return None
    if len(copies) == 2 and not _same_content(*copies):
      raise DataError(f"--data_dir={quoted(directory)}: holds both {stem} and "
                      f"{stem}.gz, and they differ; remove the one you do "
                      "not mean")
    found[role] = copies[0]
  return found


def _same_content(gzipped: str, raw: str) -> bool:
  """Whether a `.gz` file decompresses to a raw file's bytes."""
  import gzip  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top

  chunk = 1 << 20
  try:
    with gzip.open(gzipped, "rb") as a, open(raw, "rb") as b:
      while True:
        left, right = a.read(chunk), b.read(chunk)
        if left != right:
          return False
        if not left:
          return True
  except (OSError, EOFError, zlib.error):
    return False


def load_idx_dir(directory: str) -> ImageDataset:
  """Reads the four IDX files in `directory` and checks they agree.

  Raises:
    DataError: Naming the directory or the file that is missing or wrong.
  """
  paths = _find_idx_files(directory)
  if paths is None:
    missing = [stem for stem in IDX_FILES.values()
               if not any(os.path.isfile(os.path.join(directory, stem + ext))
                          for ext in (".gz", ""))]
    raise DataError(f"--data_dir={quoted(directory)}: missing IDX file(s) "
                    f"{', '.join(missing)} (raw or .gz)")
  arrays = {}
  for split in ("train", "test"):
    images = idx.read_idx(paths[f"{split}_images"], expected_ndim=3)
    labels = idx.read_idx(paths[f"{split}_labels"], expected_ndim=1)
    if len(images) != len(labels):
      raise DataError(
          f"{quoted(paths[split + '_images'])}: holds {len(images)} images "
          f"but {quoted(paths[split + '_labels'])} holds {len(labels)} "
          "labels")
    arrays[f"{split}_images"] = images[..., np.newaxis]
    arrays[f"{split}_labels"] = labels.astype(np.int64)
  if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
    raise DataError(f"{quoted(paths['test_images'])}: images are "
                    f"{arrays['test_images'].shape[1:3]} but training images "
                    f"are {arrays['train_images'].shape[1:3]}")
  return ImageDataset(source=directory, **arrays)


def load_tfds(name: str, timeout_s: float, data_dir: str | None = None,
              limit: int | None = None) -> ImageDataset:
  """A TFDS dataset by name (see `tfds_source.load`)."""
  return ImageDataset(**tfds_source.load(name, timeout_s, data_dir, limit))
