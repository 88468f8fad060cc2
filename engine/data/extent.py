"""How large a dataset will be in memory, known before it is read.

`estimate(config)` follows the rule `sources.load` follows, but reads only
what says the size: an `.npz`'s array headers, the IDX headers, a folder's
listing (and, without both --image_size and --channels, the first image at
its own size), a converted dataset's metadata. The result is the shape the
images will have once --image_size and --channels have converted them, and
the bytes the run will hold, so a run that cannot fit is refused before
anything is decoded, resized or built (`engine.run.memory`).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import zlib
from typing import Optional

from engine.config import DataConfig
from engine.data import idx
from engine.data import images
from engine.data import npz
from engine.data import shards
from engine.data import sources
from engine.errors import DataError, quoted

# A label is held as an int64 beside each image.
_LABEL_BYTES = 8


@dataclasses.dataclass(frozen=True)
class Extent:
  """A dataset's size before it is loaded.

  Attributes:
    source: What `--data_dir` names (for the message).
    image_shape: (rows, cols, channels) after --image_size/--channels.
    counts: {split: examples the run takes} (--max_train_examples applied).
    in_memory: Whether the images are held (False: read by index from
      disk, as converted shards are; then only the labels are held).
  """

  source: str
  image_shape: tuple
  counts: dict
  in_memory: bool = True

  @property
  def examples(self) -> int:
    return sum(self.counts.values())

  @property
  def held_bytes(self) -> int:
    """The images (uint8, one copy) and labels the run holds."""
    per_example = _LABEL_BYTES + (math.prod(self.image_shape)
                                  if self.in_memory else 0)
    return self.examples * per_example


def estimate(config: DataConfig, seed: int = 0) -> Optional[Extent]:
  """The extent of the dataset `config` names; None where it cannot be
  known without reading it (tensorflow-datasets), or where the source is
  one `sources.load` refuses (which says why).

  Raises:
    DataError: The error `sources.load` would raise for headers or a
      listing that are wrong (the same checks, made first).
  """
  path = config.data_dir
  sources.check_data_dir(path)
  if not path or not os.path.exists(path):
    return None
  conversion = images.Conversion(config.image_size, config.channels)
  limit = config.max_train_examples
  if shards.is_sharded(path):
    return None if config.image_size or config.channels else _shards(
        path, limit)
  if os.path.isfile(path):
    if not path.endswith(".npz"):
      return None
    shapes = npz.images_shapes(path)
    counts = _limited({s: shape[0] for s, shape in shapes.items()}, limit)
    return Extent(path, images.converted_shape(shapes["train"][1:],
                                               conversion, path), counts)
  idx_files = sources.idx_files(path)
  if idx_files:
    shapes = {split: _idx_shape(idx_files[f"{split}_images"])
              for split in ("train", "test")}
    counts = _limited({s: shape[0] for s, shape in shapes.items()}, limit)
    return Extent(path, images.converted_shape(shapes["train"][1:],
                                               conversion, path), counts)
  if sources.is_image_folder(path):
    counts, shape = images.folder_extent(path, conversion,
                                         config.test_fraction, seed, limit)
    return Extent(path, shape, counts)
  return None


def _limited(counts: dict, limit: Optional[int]) -> dict:
  return {split: min(count, limit) if limit and split == "train" else count
          for split, count in counts.items()}


def _idx_shape(path: str) -> tuple:
  """The shape an IDX images file's header promises (checked as
  `idx.read_idx` checks it; only the header is read)."""
  compressed = path.endswith(".gz")
  try:
    with (gzip.open if compressed else open)(path, "rb") as stream:
      # The header check `read_idx` and `stream_rows` make, on its own.
      return idx._header(stream, path, 3, os.path.getsize(path),  # pylint: disable=protected-access
                         compressed)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{quoted(path)}: cannot read it ({e})") from None


def _shards(directory: str, limit: Optional[int]) -> Optional[Extent]:
  """A converted dataset's extent from its metadata (None if unreadable:
  `shards.open_dataset` says why)."""
  try:
    with open(os.path.join(directory, shards.METADATA), "rb") as f:
      meta = json.loads(f.read().decode("utf-8"))
    shape = tuple(int(d) for d in meta["image_shape"])
    counts = {split: int(meta["splits"][split]["num_examples"])
              for split in shards.SPLITS}
  except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
    return None
  return Extent(directory, shape, _limited(counts, limit), in_memory=False)
