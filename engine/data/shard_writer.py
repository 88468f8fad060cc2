"""Writes a converted dataset (the layout `engine.data.shards` reads).

Streams: the splits come as chunks of (uint8 images, int64 labels), each
chunk is written and dropped, so memory does not grow with the dataset. The
files go into a sibling `<output_dir>.partial-<hex>` directory that becomes
`output_dir` by one rename once every file and the metadata are written: a
conversion cut short is never read as a whole one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from typing import Callable, Iterable, Optional

import numpy as np

from engine.data import arrays
from engine.data import shards
from engine.errors import DataError, quoted

SHARD_BYTES = 256 << 20
# One record per chunk, uncompressed: each example is read on its own.
_WRITE_OPTIONS = "group_size:1,uncompressed"


def _entry(directory: str, name: str, **more) -> dict:
  path = os.path.join(directory, name)
  return dict(file=name, bytes=os.path.getsize(path),
              sha256=shards.file_digest(path), **more)


class _SplitWriter:
  """Writes one split's shards, labels and pixel sums."""

  def __init__(self, directory: str, split: str, image_shape: tuple,
               shard_bytes: int):
    self.directory, self.split = directory, split
    self.image_shape = tuple(image_shape)
    pixels = int(np.prod(image_shape))
    self.per_shard = max(1, shard_bytes // (pixels + 8))
    self.labels: list[np.ndarray] = []
    self.sums = np.zeros((2, *image_shape), np.int64)
    self.shards: list[dict] = []
    self._writer, self._in_shard, self.count = None, 0, 0

  def _close_shard(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self.shards[-1] = _entry(self.directory, self.shards[-1]["file"],
                               num_examples=self._in_shard)
      self._writer = None

  def add(self, images: np.ndarray, labels: np.ndarray) -> None:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.shape[1:] != self.image_shape:
      raise DataError(f"{self.split} images of shape {images.shape[1:]} "
                      f"among images of shape {self.image_shape}")
    # Checked, not cast: a uint64 near 2**64 must not become -1.
    labels = arrays.checked_labels(f"{self.split} labels", labels,
                                   unlabelled=True).astype("<i8")
    if len(labels) != len(images):
      raise DataError(f"{self.split}: {len(images)} images but "
                      f"{len(labels)} labels")
    self.labels.append(labels)
    self.sums[0] += images.sum(axis=0, dtype=np.int64)
    self.sums[1] += (images >= 128).sum(axis=0)
    for image, label in zip(images, labels):
      if self._writer is None or self._in_shard == self.per_shard:
        self._close_shard()
        name = f"{self.split}-{len(self.shards):05d}.array_record"
        self._writer = shards.array_record_module().ArrayRecordWriter(
            os.path.join(self.directory, name), _WRITE_OPTIONS)
        self.shards.append({"file": name})
        self._in_shard = 0
      self._writer.write(image.tobytes() + label.tobytes())
      self._in_shard += 1
    self.count += len(images)

  def finish(self) -> dict:
    self._close_shard()
    labels = (np.concatenate(self.labels) if self.labels
              else np.zeros([0], np.int64)).astype(np.int64)
    np.save(os.path.join(self.directory, f"{self.split}-labels.npy"), labels)
    np.save(os.path.join(self.directory, f"{self.split}-pixel-stats.npy"),
            self.sums)
    classes = np.unique(labels[labels >= 0])
    return {"num_examples": self.count, "shards": self.shards,
            "classes": [int(c) for c in classes],
            "unlabelled": int(np.sum(labels < 0)),
            "labels": _entry(self.directory, f"{self.split}-labels.npy"),
            "pixel_stats": _entry(self.directory,
                                  f"{self.split}-pixel-stats.npy")}


def write(output_dir: str, splits: dict[str, Iterable], image_shape: tuple,
          source: str, shard_bytes: int = SHARD_BYTES,
          progress: Optional[Callable[[str, int], None]] = None) -> dict:
  """Writes `splits` ({"train": chunks, "test": chunks}) to `output_dir`.

  Args:
    output_dir: Must not exist, or be an empty directory.
    splits: For each split, an iterable of (images uint8 [k, rows, cols,
      channels], labels int64 [k]) chunks.
    image_shape: (rows, cols, channels) of every image.
    source: Where the data came from, for the metadata.
    shard_bytes: About how large one shard file grows.
    progress: Called with (split, examples written so far) after each chunk.

  Returns:
    The metadata written.

  Raises:
    DataError: If `output_dir` is not empty, or a chunk is malformed.
  """
  output_dir = os.path.abspath(output_dir)
  if os.path.exists(output_dir) and (not os.path.isdir(output_dir)
                                     or os.listdir(output_dir)):
    raise DataError(f"--output_dir={quoted(output_dir)}: exists and is not "
                    "an empty directory; pass a new one")
  partial = f"{output_dir}.partial-{secrets.token_hex(4)}"
  os.makedirs(partial)
  try:
    meta = {"format": shards.FORMAT, "source": source,
            "image_shape": [int(d) for d in image_shape], "dtype": "uint8",
            "splits": {}}
    for split in shards.SPLITS:
      writer = _SplitWriter(partial, split, image_shape, shard_bytes)
      for images, labels in splits[split]:
        writer.add(images, labels)
        if progress:
          progress(split, writer.count)
      if not writer.count:
        raise DataError(f"{quoted(source)}: holds no {split} images")
      meta["splits"][split] = writer.finish()
    with open(os.path.join(partial, shards.METADATA), "w") as f:
      json.dump(meta, f, indent=2)
    if os.path.isdir(output_dir):
      os.rmdir(output_dir)  # Empty (checked above).
    os.rename(partial, output_dir)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise
  return meta
