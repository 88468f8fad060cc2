"""Training images that stay where they are and are read by index.

`IndexedImages` stands for the uint8 image array [N, rows, cols, channels]
of a split whose examples are read on demand (converted shards,
`engine.data.shards`; a TFDS dataset prepared as ArrayRecord,
`engine.data.tfds_source`). It quacks like that array where the engine
asks (`shape`, `len`, row slices for streaming passes); `nbytes` is what it
holds in memory, its labels, which is what the memory check counts. In a
graph, `gather` reads a batch's examples and `read_ahead` a call's worth
while starting on the next, so batches stay a pure function of (seed, step)
and under tf.distribute each input pipeline reads only its replicas' slices.
"""

from __future__ import annotations

import abc
import concurrent.futures
from typing import Optional

import numpy as np
import tensorflow as tf


class IndexedImages(abc.ABC):
  """A split's images, read by index (subclasses say how: `_read_rows`).

  Args:
    image_shape: (rows, cols, channels).
    labels: int64 [N], held in memory.
    split: Its name, for messages.
  """

  dtype = np.dtype(np.uint8)

  def __init__(self, image_shape: tuple, labels: np.ndarray, split: str):
    self.image_shape = tuple(int(d) for d in image_shape)
    self.labels = np.asarray(labels, np.int64)
    self.num_examples = len(self.labels)
    self.split = split
    self._pool = concurrent.futures.ThreadPoolExecutor(1)
    self._ahead = None

  @abc.abstractmethod
  def _read_rows(self, indices: np.ndarray) -> np.ndarray:
    """uint8 [len(indices), *image_shape] for valid int64 `indices`."""

  @property
  def shape(self) -> tuple:
    return (self.num_examples, *self.image_shape)

  @property
  def nbytes(self) -> int:
    return int(self.labels.nbytes)

  def __len__(self) -> int:
    return self.num_examples

  def pixel_sums(self) -> Optional[np.ndarray]:
    """Stored int64 [2, ...] sums of x and of x >= 128 (None: not stored)."""
    return None

  def read(self, indices) -> np.ndarray:
    """uint8 images [*indices.shape, rows, cols, channels], in that order."""
    shape = np.shape(indices)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0
                         or indices.max() >= self.num_examples):
      raise IndexError(f"{self.split} index out of [0, {self.num_examples})")
    return self._read_rows(indices).reshape(*shape, *self.image_shape)

  def __getitem__(self, index) -> np.ndarray:
    if not isinstance(index, slice):
      raise TypeError("indexed images are read by slices or `read`")
    return self.read(np.arange(self.num_examples)[index])

  def __array__(self, dtype=None, copy=None):
    # Whole-split consumers (the test split, tools): read it all.
    images = self.read(np.arange(self.num_examples))
    return images if dtype is None else images.astype(dtype)

  def _read_ahead(self, indices, upcoming) -> np.ndarray:
    key = np.asarray(indices).tobytes()
    ahead, self._ahead = self._ahead, None
    if ahead is not None and ahead[0] == key:
      images = ahead[1].result()
    else:
      images = self.read(indices)
    self._ahead = (np.asarray(upcoming).tobytes(),
                   self._pool.submit(self.read, np.asarray(upcoming)))
    return images

  def read_ahead(self, order: tf.Tensor, upcoming: tf.Tensor) -> tf.Tensor:
    """The images at `order` (int64 [..., B]), read by the previous call if
    it was given them as its `upcoming`; then starts reading `upcoming`."""
    images = tf.numpy_function(self._read_ahead, [order, upcoming], tf.uint8,
                               stateful=True)
    return tf.ensure_shape(images, [*order.shape, *self.image_shape])

  def gather(self, order: tf.Tensor) -> tf.Tensor:
    """The images at `order` (int64 [B]), as a uint8 tensor [B, ...]."""
    images = tf.numpy_function(self.read, [order], tf.uint8, stateful=False)
    return tf.ensure_shape(images, [order.shape[0], *self.image_shape])


def gather(images, order: tf.Tensor) -> tf.Tensor:
  """`tf.gather(images, order)` for an in-memory tensor or IndexedImages."""
  if isinstance(images, IndexedImages):
    return images.gather(order)
  return tf.gather(images, order)
