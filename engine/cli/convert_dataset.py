r"""Converts a dataset into sharded ArrayRecord files that training reads by
index (`engine.data.shards`), so no process holds the whole dataset.

    vae-engine convert_dataset --data_dir=path/to/mnist \
        --output_dir=/data/mnist-shards
    vae-engine convert_dataset --data_dir=arrays/ --output_dir=...
        # arrays/: x_train.npy, x_test.npy [, y_train.npy, y_test.npy]
    vae-engine convert_dataset --dataset=cifar10 --output_dir=...

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


def define_flags(fv: absl_flags.FlagValues = FLAGS):
  flags.define(fv)
  absl_flags.DEFINE_string("output_dir", None, "Where to write the shards "
                           "(a new or empty directory).", required=True,
                           flag_values=fv)
  absl_flags.DEFINE_integer("shard_mb", 256, "About how large a shard grows.",
                            lower_bound=1, upper_bound=1 << 20,
                            flag_values=fv)


def _chunks(images, labels, conversion, source: str = "the data"):
  """(images, labels) in chunks of about _CHUNK_BYTES, converted."""
  import numpy as np

  from engine.data import images as image_lib

  rows = max(1, _CHUNK_BYTES // max(1, int(np.prod(images.shape[1:])),
                                    int(np.prod(image_lib.converted_shape(
                                        images.shape[1:], conversion,
                                        source)))))
  for start in range(0, len(images), rows):
    part = np.asarray(images[start:start + rows])
    if part.ndim == 3:
      part = part[..., np.newaxis]
    yield (image_lib.convert(part, conversion, source),
           np.asarray(labels[start:start + rows], np.int64))


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
    yield (image_lib.convert(images, conversion,
                             f"tensorflow-datasets:{name}"),
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

    splits[split] = (rows, labels.astype(np.int64))
  if shapes["train"][1:] != shapes["test"][1:]:
    raise DataError(f"{quoted(paths['test_images'])}: images are "
                    f"{shapes['test'][1:]} but training images are "
                    f"{shapes['train'][1:]}")
  size = conversion.image_size or shapes["train"][1:]
  out_shape = (*size, conversion.channels or 1)
  # Read in ~_CHUNK_BYTES; converted in parts of ~_CHUNK_BYTES too (an
  # --image_size larger than the files' grows each image).
  step = max(1, _CHUNK_BYTES // int(np.prod(out_shape)))

  def chunks(rows, labels):
    start = 0
    for images in rows:
      for i in range(0, len(images), step):
        part = images[i:i + step, ..., np.newaxis]
        yield (image_lib.convert(part, conversion),
               labels[start:start + len(part)])
        start += len(part)
  return {split: chunks(*splits[split]) for split in splits}, out_shape


def _sources(config, seed: int = 0):
  """(source name, {split: chunk iterable}, image shape); `seed` draws a
  folder's held-out test images, as training draws them."""
  from engine.data import images as image_lib
  from engine.data import npy
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
  sources.check_data_dir(path)  # A FIFO or a device: refused unopened.
  if npy.is_npy_dir(path):
    arrays = npy.npy_arrays(path)
    splits = {split: _chunks(*arrays[split], conversion, path)
              for split in arrays}
    images = arrays["train"][0]
    return path, splits, image_lib.converted_shape(images.shape[1:],
                                                   conversion, path)
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
  convert(FLAGS)


def convert(fv: absl_flags.FlagValues) -> None:
  """Converts the dataset the parsed flags `fv` name (see the module
  docstring); raises a UserError for what the user can fix."""
  from engine.data import shard_writer
  from engine.errors import UserError, quoted

  run_config = flags.to_config(fv)
  config = run_config.data
  output_dir = fv.output_dir
  if os.path.exists(output_dir) and (
      not os.path.isdir(output_dir) or os.listdir(output_dir)):
    raise UserError(f"--output_dir={quoted(output_dir)}: exists and "
                    "is not an empty directory; pass a new one")
  source, splits, image_shape = _sources(config, run_config.train.seed)
  started, shown = time.perf_counter(), [0.0]

  def progress(split, count):
    now = time.perf_counter()
    if now - shown[0] >= 2.0:
      shown[0] = now
      print(f"  {split}: {count:,} examples written", file=sys.stderr,
            flush=True)

  meta = shard_writer.write(output_dir, splits, image_shape, source,
                            shard_bytes=fv.shard_mb << 20,
                            progress=progress)
  counts = ", ".join(
      f"{split} {entry['num_examples']:,} in {len(entry['shards'])} shard(s)"
      for split, entry in meta["splits"].items())
  print(f"converted {source} ({'x'.join(map(str, image_shape))}): {counts}, "
        f"to {output_dir} in {time.perf_counter() - started:.1f} s")


def cli() -> None:
  """The `vae-engine convert_dataset` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
