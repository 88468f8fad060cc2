"""Large synthetic image sets, written as `.npy` arrays without ever holding
them in memory (the path numpy users with large arrays convert from)."""

import os

import numpy as np


def write_npy_images(directory, num_train: int, num_test: int,
                     shape=(64, 64, 3), chunk: int = 4096, seed: int = 0):
  """Writes x_train.npy, x_test.npy, y_train.npy, y_test.npy into
  `directory`: uint8 images of smooth random blobs (a VAE learns something)
  and labels 0-9, chunk by chunk through memory-mapped files.

  Returns:
    The bytes of image data written.
  """
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  rows = np.linspace(0, 1, shape[0], dtype=np.float32)[:, None, None]
  cols = np.linspace(0, 1, shape[1], dtype=np.float32)[None, :, None]
  for split, count in (("train", num_train), ("test", num_test)):
    images = np.lib.format.open_memmap(
        os.path.join(directory, f"x_{split}.npy"), mode="w+", dtype=np.uint8,
        shape=(count, *shape))
    labels = rng.integers(0, 10, count).astype(np.int64)
    for start in range(0, count, chunk):
      size = min(chunk, count - start)
      centres = rng.random((size, 2, 1, 1, 1), dtype=np.float32)
      colours = rng.random((size, 1, 1, shape[2]), dtype=np.float32)
      distance = ((rows - centres[:, 0]) ** 2 + (cols - centres[:, 1]) ** 2)
      images[start:start + size] = (255 * colours * np.exp(
          -distance * 20)).astype(np.uint8)
    images.flush()
    del images
    np.save(os.path.join(directory, f"y_{split}.npy"), labels)
  return (num_train + num_test) * int(np.prod(shape))
