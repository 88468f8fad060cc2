"""Converts a dataset into sharded ArrayRecord files that training reads by
index (`engine.data.shards`), so no process holds the whole dataset.

    python tools/convert_dataset.py --data_dir=../shared/data/mnist \
        --output_dir=/data/mnist-shards
    python tools/convert_dataset.py --data_dir=arrays/ --output_dir=...
        # arrays/: x_train.npy, x_test.npy [, y_train.npy, y_test.npy]
    python tools/convert_dataset.py --dataset=cifar10 --output_dir=...

Then `--data_dir=/data/mnist-shards` trains to the same weights as the
source. Takes every source the engine reads, with the same data flags
(--image_size, --channels, --test_fraction, --seed), and a directory of
`.npy` arrays. Every source is streamed in chunks (image folders decoded
a chunk at a time), so memory does not grow with the dataset.
Writes into a temporary sibling directory renamed into place at the end,
and refuses an --output_dir that is not empty.
"""

from __future__ import annotations

import os
import sys
import time

from engine.cli import tool  # First: TensorFlow's quiet import.

from absl import flags as absl_flags

import flags

FLAGS = absl_flags.FLAGS
_CHUNK_BYTES = 64 << 20
NPY_FILES = ("x_train.npy", "x_test.npy")


def define_flags():
  flags.define()
  absl_flags.DEFINE_string("output_dir", None, "Where to write the shards "
                           "(a new or empty directory).", required=True)
  absl_flags.DEFINE_integer("shard_mb", 256, "About how large a shard grows.",
                            lower_bound=1, upper_bound=1 << 20)


def _chunks(images, labels, conversion):
  """(images, labels) in chunks of about _CHUNK_BYTES, converted."""
  import numpy as np

  from engine.data import images as image_lib

  per_row = max(1, int(np.prod(images.shape[1:])))
  rows = max(1, _CHUNK_BYTES // per_row)
  for start in range(0, len(images), rows):
    part = np.asarray(images[start:start + rows])
    if part.ndim == 3:
      part = part[..., np.newaxis]
    yield (image_lib.convert(part, conversion),
           np.asarray(labels[start:start + rows], np.int64))


class NpyImages:
  """The images of a `.npy` file, read in row ranges by plain file reads (a
  memory map would count every page read in the process's resident set).

  Raises:
    DataError: If the file is not a readable uint8 [N, H, W(, C)] array.
  """

  def __init__(self, path: str):
    import numpy as np

    from engine.errors import DataError, quoted, reason

    self.path = path
    try:
      with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = (
            np.lib.format.read_array_header_1_0(f) if version == (1, 0)
            else np.lib.format.read_array_header_2_0(f))
        self.offset = f.tell()
    except (OSError, ValueError, EOFError) as e:
      raise DataError(f"{quoted(path)}: not a readable .npy ({reason(e)})"
                      ) from None
    if dtype != np.uint8 or len(shape) not in (3, 4) or fortran:
      raise DataError(f"{quoted(path)}: {dtype} of shape {shape}"
                      f"{' (Fortran order)' if fortran else ''}; expected "
                      "uint8 [N, H, W] or [N, H, W, C] in C order")
    self.shape = tuple(shape)
    self.row_bytes = int(np.prod(shape[1:]))
    expected = self.offset + self.shape[0] * self.row_bytes
    if os.path.getsize(path) != expected:
      raise DataError(f"{quoted(path)}: {os.path.getsize(path)} bytes, but "
                      f"its header promises {expected} (truncated?)")

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, rows: slice):
    import numpy as np

    start, stop, _ = rows.indices(len(self))
    with open(self.path, "rb") as f:
      f.seek(self.offset + start * self.row_bytes)
      data = f.read(max(0, stop - start) * self.row_bytes)
    return np.frombuffer(data, np.uint8).reshape(-1, *self.shape[1:])


def npy_arrays(directory: str) -> dict:
  """The splits of a directory of `.npy` arrays, read lazily, checked.

  Raises:
    DataError: Naming the file whose dtype, rank or length is wrong.
  """
  import numpy as np

  from engine.errors import DataError, quoted

  arrays = {}
  for split in ("train", "test"):
    images = NpyImages(os.path.join(directory, f"x_{split}.npy"))
    label_path = os.path.join(directory, f"y_{split}.npy")
    if os.path.exists(label_path):
      labels = np.load(label_path, allow_pickle=False)  # 8 bytes an image.
      if labels.dtype.kind not in "iu" or labels.shape != (len(images),):
        raise DataError(f"{quoted(label_path)}: {labels.dtype} of shape "
                        f"{labels.shape}; expected {len(images)} integer "
                        "labels")
    else:
      labels = np.full(len(images), -1, np.int64)
    arrays[split] = (images, labels)
  return arrays


def _tfds_chunks(builder, split: str, conversion, name: str):
  import numpy as np
  import tensorflow_datasets as tfds

  from engine.data import images as image_lib
  from engine.data import tfds_source

  if tfds_source.is_indexable(builder):  # ArrayRecord: read by index.
    indexed = tfds_source.TfdsImages(builder, split, name)
    yield from _chunks(indexed, indexed.labels, conversion)
    return
  dataset = builder.as_dataset(split=split).batch(1024)
  for chunk in tfds.as_numpy(dataset):
    images = np.asarray(chunk["image"], np.uint8)
    yield (image_lib.convert(images, conversion),
           np.asarray(chunk.get("label", np.full(len(images), -1)), np.int64))


def _idx_chunks(paths: dict, conversion):
  """({split: chunks}, shape): the IDX images streamed, the labels whole
  (one byte an image), checked as `sources.load_idx_dir` checks them."""
  import numpy as np

  from engine.data import idx
  from engine.data import images as image_lib
  from engine.errors import DataError, quoted

  splits, shapes = {}, {}
  for split in ("train", "test"):
    labels = idx.read_idx(paths[f"{split}_labels"], expected_ndim=1)
    shape, rows = idx.stream_rows(paths[f"{split}_images"], _CHUNK_BYTES)
    if shape[0] != len(labels):
      raise DataError(
          f"{quoted(paths[split + '_images'])}: holds {shape[0]} images "
          f"but {quoted(paths[split + '_labels'])} holds {len(labels)} "
          "labels")
    shapes[split] = shape

    def chunks(rows=rows, labels=labels.astype(np.int64)):
      start = 0
      for images in rows:
        yield (image_lib.convert(images[..., np.newaxis], conversion),
               labels[start:start + len(images)])
        start += len(images)
    splits[split] = chunks()
  if shapes["train"][1:] != shapes["test"][1:]:
    raise DataError(f"{quoted(paths['test_images'])}: images are "
                    f"{shapes['test'][1:]} but training images are "
                    f"{shapes['train'][1:]}")
  size = conversion.image_size or shapes["train"][1:]
  channels = conversion.channels or 1
  return splits, (*size, channels)


def _sources(config, seed: int = 0):
  """(source name, {split: chunk iterable}, image shape); `seed` draws a
  folder's held-out test images, as training draws them."""
  from engine.data import images as image_lib
  from engine.data import npz
  from engine.data import shards
  from engine.data import sources
  from engine.data import tfds_source

  conversion = image_lib.Conversion(config.image_size, config.channels)
  path = config.data_dir
  local = [d for d in sources.KNOWN_LOCAL_COPIES.get(config.dataset, ())
           if sources.idx_files(d)]
  if not path and local:  # Debian's copy, as training finds it.
    path = local[0]
  if path and all(os.path.isfile(os.path.join(path, name))
                  for name in NPY_FILES):
    arrays = npy_arrays(path)
    splits = {split: _chunks(*arrays[split], conversion)
              for split in arrays}
    first = next(_chunks(arrays["test"][0][:1], arrays["test"][1][:1],
                         conversion))[0]
    return path, splits, first.shape[1:]
  if not path:
    builder = tfds_source.tfds_builder(
        config.dataset, config.download_timeout_s, config.tfds_data_dir)
    splits = {split: _tfds_chunks(builder, split, conversion, config.dataset)
              for split in ("train", "test")}
    first = next(_tfds_chunks(builder, "test", conversion,
                              config.dataset))[0]
    return f"tensorflow-datasets:{config.dataset}", splits, first.shape[1:]
  if shards.is_sharded(path):
    from engine.errors import DataError, quoted
    raise DataError(f"--data_dir={quoted(path)}: already converted")
  if sources.is_image_folder(path):
    splits, shape = image_lib.stream_folder(path, conversion,
                                            config.test_fraction, seed)
    return path, splits, shape
  if path and os.path.isfile(path) and path.endswith(".npz"):
    splits, shape = npz.stream_npz(path, conversion)
    return path, splits, shape
  if path and sources.idx_files(path):
    splits, shape = _idx_chunks(sources.idx_files(path), conversion)
    return path, splits, shape
  sources.load(config, seed)  # Says what is wrong with `path`.
  raise AssertionError(f"no source for {path}")  # Unreachable: load raises.


def main(argv):
  del argv
  from engine.data import shard_writer
  from engine.errors import UserError, quoted

  run_config = flags.to_config(FLAGS)
  config = run_config.data
  if os.path.exists(FLAGS.output_dir) and (
      not os.path.isdir(FLAGS.output_dir) or os.listdir(FLAGS.output_dir)):
    raise UserError(f"--output_dir={quoted(FLAGS.output_dir)}: exists and "
                    "is not an empty directory; pass a new one")
  source, splits, image_shape = _sources(config, run_config.train.seed)
  started, shown = time.perf_counter(), [0.0]

  def progress(split, count):
    now = time.perf_counter()
    if now - shown[0] >= 2.0:
      shown[0] = now
      print(f"  {split}: {count:,} examples written", file=sys.stderr,
            flush=True)

  meta = shard_writer.write(FLAGS.output_dir, splits, image_shape, source,
                            shard_bytes=FLAGS.shard_mb << 20,
                            progress=progress)
  counts = ", ".join(
      f"{split} {entry['num_examples']:,} in {len(entry['shards'])} shard(s)"
      for split, entry in meta["splits"].items())
  print(f"converted {source} ({'x'.join(map(str, image_shape))}): {counts}, "
        f"to {FLAGS.output_dir} in {time.perf_counter() - started:.1f} s")


def cli() -> None:
  """The `vae-engine convert_dataset` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
