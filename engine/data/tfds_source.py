"""TensorFlow Datasets by name: downloaded within a deadline, read into
memory, or, prepared as ArrayRecord, read by index.

`tfds.data_source` serves an ArrayRecord dataset's examples by index (TFDS's
random access, as Grain reads it), so its training split is used as
converted shards are (`engine.data.indexed`): each batch reads its examples,
nothing holds the split. Its labels are read once, images left undecoded.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

import numpy as np

from engine.data import indexed
from engine.errors import DataError, quoted


_DOWNLOAD_SCRIPT = """
import sys
import tensorflow_datasets as tfds
tfds.builder(sys.argv[1], data_dir=sys.argv[2] or None).download_and_prepare()
"""


def load(name: str, timeout_s: float, data_dir: str | None = None,
         limit: int | None = None) -> dict:
  """A TFDS image dataset, downloaded within `timeout_s` if needed.

  One prepared in ArrayRecord format keeps its training split on disk, read
  by index (`TfdsImages`); `limit` then bounds it (others are cut after).

  Returns:
    Keyword arguments of `sources.ImageDataset`.

  Raises:
    DataError: If the dataset is unknown, cannot be downloaded in time, or is
      not made of images.
  """
  builder = tfds_builder(name, timeout_s, data_dir)
  names = label_names(builder)
  if is_indexable(builder):
    train = TfdsImages(builder, "train", name, limit)
    test = TfdsImages(builder, "test", name)
    return dict(train_images=train, train_labels=train.labels,
                test_images=test, test_labels=test.labels,
                source=f"tensorflow-datasets:{name} (ArrayRecord, read by "
                "index)", class_names=names)
  arrays = {"class_names": names}
  for split in ("train", "test"):
    images, labels = split_arrays(builder, split, name)
    arrays[f"{split}_images"] = images
    arrays[f"{split}_labels"] = labels
  return dict(source=f"tensorflow-datasets:{name}", **arrays)


def label_names(builder) -> tuple[str, ...] | None:
  """The names of the classes of `builder`'s label feature (None: none)."""
  features = builder.info.features
  label = features["label"] if "label" in features else None
  # A ClassLabel names its classes; other label features do not.
  return tuple(getattr(label, "names", None) or ()) or None


def tfds_builder(name: str, timeout_s: float, data_dir: str | None = None):
  """The TFDS builder of `name`, prepared (downloaded within `timeout_s`).

  The download runs in a child process so that, when the machine is offline
  and TFDS retries with back-off, it can be stopped cleanly at the deadline.

  Raises:
    DataError: If the dataset is unknown or cannot be downloaded in time.
  """
  import tensorflow_datasets as tfds  # Slow import; only this source needs it.

  hint = ("pass --data_dir=DIR with the images (the four IDX files, a folder "
          "of images or an .npz file)" + (
              " or install Debian's dataset-fashion-mnist"
              if name == "fashion_mnist" else ""))
  try:
    with _tfds_warnings_held():
      builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # TFDS raises several types for unknown names.
    raise DataError(f"--dataset={name}: not a tensorflow-datasets dataset "
                    f"({type(e).__name__}); {hint}") from None
  with _tfds_warnings_held():
    prepared = builder.is_prepared()
  if not prepared:
    try:
      done = subprocess.run(
          [sys.executable, "-c", _DOWNLOAD_SCRIPT, name, data_dir or ""],
          capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
      raise DataError(f"--dataset={name}: tensorflow-datasets could not "
                      f"download it within {timeout_s:g} s (offline?); "
                      f"{hint}") from None
    if done.returncode != 0:
      last = (done.stderr.strip().splitlines() or ["no output"])[-1]
      raise DataError(f"--dataset={name}: tensorflow-datasets download "
                      f"failed ({last[:200]}); {hint}")
    with _tfds_warnings_held():
      builder = tfds.builder(name, data_dir=data_dir)
      prepared = builder.is_prepared()
    if not prepared:
      # Its download "succeeds" without preparing anything when an empty
      # version folder, left by an earlier failed one, is in the way.
      raise DataError(
          f"--dataset={name}: tensorflow-datasets left it unprepared (an "
          f"incomplete download in {quoted(builder.data_dir)}? remove that "
          f"folder to download again); {hint}")
  return builder


@contextlib.contextmanager
def _tfds_warnings_held():
  """TFDS warns through absl about what it finds in its cache (a version
  folder without dataset_info.json, left by a failed download): a line
  before the engine's own `error:` line, which already says what to do.
  Held back at the engine's quiet default; --verbosity shows them."""
  from absl import logging as absl_logging

  verbosity = absl_logging.get_verbosity()
  if verbosity > absl_logging.WARNING:  # --verbosity asked for more.
    yield
    return
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)


def split_arrays(builder, split: str,
                       name: str) -> tuple[np.ndarray, np.ndarray]:
  """Reads one split into (uint8 images [N, rows, cols, channels], labels).

  Reads in fixed-size batches: `batch_size=-1` needs a known cardinality.
  """
  import tensorflow_datasets as tfds

  dataset = builder.as_dataset(split=split)
  if "image" not in dataset.element_spec:
    raise DataError(f"--dataset={name}: has no 'image' feature")
  image_chunks, label_chunks = [], []
  for chunk in tfds.as_numpy(dataset.batch(4096)):
    image_chunks.append(np.asarray(chunk["image"], dtype=np.uint8))
    # A dataset without labels gets -1, as a folder of images does (0 would
    # pass for one class).
    label_chunks.append(np.asarray(
        chunk.get("label", np.full(len(chunk["image"]), -1)), dtype=np.int64))
  images = np.concatenate(image_chunks)
  if images.ndim != 4:
    raise DataError(f"--dataset={name}: images have shape {images.shape[1:]}, "
                    "expected rows x cols x channels")
  return images, np.concatenate(label_chunks)


_LABEL_CHUNK = 4096


def is_indexable(builder) -> bool:
  """Whether `builder` was prepared in ArrayRecord format."""
  import tensorflow_datasets as tfds
  return builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD


class TfdsImages(indexed.IndexedImages):
  """One split of a prepared ArrayRecord TFDS dataset, read by index.

  Args:
    builder: The prepared TFDS builder.
    split: Its split name.
    name: The dataset's name, for messages.
    limit: Use only the first `limit` examples (None: all).
  """

  def __init__(self, builder, split: str, name: str, limit=None):
    import tensorflow_datasets as tfds

    features = builder.info.features
    if "image" not in features:
      raise DataError(f"--dataset={name}: has no 'image' feature")
    shape = tuple(features["image"].shape)
    if len(shape) != 3 or None in shape:
      raise DataError(f"--dataset={name}: images of shape {shape} (varying "
                      "or not rows x cols x channels); convert it with "
                      "--image_size and --channels")
    self.source = builder.as_data_source(split=split)
    count = len(self.source) if limit is None else min(limit,
                                                       len(self.source))
    if "label" in features:
      plain = builder.as_data_source(
          split=split, decoders={"image": tfds.decode.SkipDecoding()})
      labels = np.concatenate([
          np.asarray([item["label"] for item in plain.__getitems__(
              list(range(start, min(start + _LABEL_CHUNK, count))))],
                     np.int64)
          for start in range(0, count, _LABEL_CHUNK)] or [np.zeros(0)])
    else:
      labels = np.full(count, -1, np.int64)
    super().__init__(shape, labels, split)

  def _read_rows(self, indices: np.ndarray) -> np.ndarray:
    items = self.source.__getitems__(indices.tolist())
    return np.stack([np.asarray(item["image"], np.uint8) for item in items]
                    ) if len(items) else np.zeros((0, *self.image_shape),
                                                  np.uint8)
