"""Sharded on-disk datasets: ArrayRecord files read by index.

A converted dataset (`vae-engine convert_dataset`) is a directory:

  vae_engine_shards.json   what follows: shape, counts, classes, source, and
                           the size and SHA-256 of every file below
  train-00000.array_record one record per example: the uint8 image's bytes
  ...                      and its label as a little-endian int64
  train-labels.npy         the labels again (int64 [N]), so that class
                           counts and labels need no pass over the images
  train-pixel-stats.npy    int64 [2, rows, cols, channels]: the sums over
                           examples of x and of x >= 128 (the pixel means
                           builders take, without a pass over the images)
  test-...                 the same for the test split

Training reads each batch's examples by index (`indexed.IndexedImages`),
which ArrayRecord serves with random reads. What a process holds is the
labels (8 bytes an example) and the batches in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Optional

import numpy as np

from engine.data import indexed
from engine.errors import DataError, quoted

METADATA = "vae_engine_shards.json"
FORMAT = "vae-engine-shards/1"
SPLITS = ("train", "test")
# Random access: no read-ahead (a step's examples are scattered).
_READ_OPTIONS = "readahead_buffer_size:0"


def is_sharded(path: Optional[str]) -> bool:
  """Whether `path` is a converted dataset (it holds the metadata file)."""
  return bool(path) and os.path.isfile(os.path.join(path, METADATA))


def file_digest(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def array_record_module():
  # Imported on use: only sharded data needs it.
  from array_record.python import array_record_module as module
  return module


class ShardedSplit(indexed.IndexedImages):
  """One split of a converted dataset, read by index from its shards.

  Args:
    directory: The converted dataset.
    split: "train" or "test".
    entry: The split's entry in the metadata.
    image_shape: (rows, cols, channels).
    limit: Use only the first `limit` examples (None: all).
  """

  def __init__(self, directory: str, split: str, entry: dict,
               image_shape: tuple, limit: Optional[int] = None):
    self.directory, self.entry = directory, entry
    self.paths = [os.path.join(directory, s["file"]) for s in entry["shards"]]
    self.starts = np.cumsum([0] + [s["num_examples"]
                                   for s in entry["shards"]])
    total = int(self.starts[-1])
    labels = np.load(os.path.join(directory, entry["labels"]["file"]),
                     allow_pickle=False)
    super().__init__(image_shape, labels[:total if limit is None else limit],
                     split)
    self.full = self.num_examples == total
    self.pixels = int(np.prod(self.image_shape))
    self._local = threading.local()

  def _readers(self) -> list:
    # One reader per shard and thread: tf.data's threads read in parallel.
    readers = getattr(self._local, "readers", None)
    if readers is None:
      module = array_record_module()
      readers = [module.ArrayRecordReader(path, _READ_OPTIONS)
                 for path in self.paths]
      self._local.readers = readers
    return readers

  def _read_rows(self, indices: np.ndarray) -> np.ndarray:
    shard_of = np.searchsorted(self.starts, indices, side="right") - 1
    out = np.empty((len(indices), self.pixels + 8), np.uint8)
    readers = self._readers()
    for shard in np.unique(shard_of):
      where = np.nonzero(shard_of == shard)[0]
      local = (indices[where] - self.starts[shard]).tolist()
      records = readers[shard].read(local)
      out[where] = np.frombuffer(b"".join(records), np.uint8).reshape(
          len(where), self.pixels + 8)
    return out[:, :self.pixels]

  def pixel_sums(self) -> Optional[np.ndarray]:
    if not self.full:  # Sums of the whole split only.
      return None
    return np.load(os.path.join(self.directory,
                                self.entry["pixel_stats"]["file"]))


def open_dataset(directory: str, limit: Optional[int] = None) -> dict:
  """The splits of a converted dataset, every file checked against the
  metadata (present, its size, its SHA-256; each shard's record count).

  Returns:
    Keyword arguments of `sources.ImageDataset`: both splits' images as
    `ShardedSplit`s, their labels.

  Raises:
    DataError: Naming the file that is missing, truncated or altered.
  """
  path = os.path.join(directory, METADATA)
  try:
    meta = json.loads(open(path, "rb").read().decode("utf-8"))
    image_shape = tuple(int(d) for d in meta["image_shape"])
    splits = {split: meta["splits"][split] for split in SPLITS}
    if meta.get("format") != FORMAT or len(image_shape) != 3:
      raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
  except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
    raise DataError(f"{quoted(path)}: not the metadata of a converted "
                    f"dataset ({type(e).__name__}: {e})") from None
  for split, entry in splits.items():
    for item in [*entry["shards"], entry["labels"], entry["pixel_stats"]]:
      _check_file(directory, item)
    module = array_record_module()
    for shard in entry["shards"]:
      reader = module.ArrayRecordReader(os.path.join(directory, shard["file"]),
                                        _READ_OPTIONS)
      count = reader.num_records()
      first = reader.read([0])[0] if count else b""
      reader.close()
      if count != shard["num_examples"] or (
          count and len(first) != int(np.prod(image_shape)) + 8):
        raise DataError(
            f"{quoted(os.path.join(directory, shard['file']))}: holds {count} "
            f"records of {len(first)} bytes, but {quoted(path)} says "
            f"{shard['num_examples']} of {int(np.prod(image_shape)) + 8}")
  train = ShardedSplit(directory, "train", splits["train"], image_shape,
                       limit)
  test = ShardedSplit(directory, "test", splits["test"], image_shape)
  return dict(train_images=train, train_labels=train.labels,
              test_images=test, test_labels=test.labels,
              source=f"{directory} ({meta.get('source', 'converted')})")


def _check_file(directory: str, item: dict) -> None:
  path = os.path.join(directory, item["file"])
  if not os.path.isfile(path):
    raise DataError(f"{quoted(path)}: missing (listed in {METADATA})")
  size = os.path.getsize(path)
  if size != item["bytes"]:
    raise DataError(f"{quoted(path)}: {size} bytes, but {METADATA} says "
                    f"{item['bytes']} (truncated or replaced?)")
  if file_digest(path) != item["sha256"]:
    raise DataError(f"{quoted(path)}: its SHA-256 differs from the one in "
                    f"{METADATA} (the file was altered)")
