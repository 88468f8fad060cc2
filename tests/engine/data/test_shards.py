"""Converted (sharded ArrayRecord) datasets: what is written is what is read,
training from them gives the source's very weights, and damage is refused."""

import functools
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from engine.config import DataConfig
from engine.data import pipeline
from engine.data import shard_writer
from engine.data import shards
from engine.data import sources
from engine.errors import DataError
from engine.run import runner
from tests.helpers import REPO_ROOT
from tests.helpers import run_tool_in_process
from tests.helpers import assert_one_line_error
from tests.helpers import run_in_process
from tests import helpers

pytestmark = pytest.mark.e2e


def _convert(source_dir, output_dir, *flags):
  """The converter's answer, from this process (as a process: the 2 GB
  test below, and test_convert_dataset)."""
  return run_tool_in_process("convert_dataset", f"--data_dir={source_dir}",
                             f"--output_dir={output_dir}", *flags)


# The tests that read `small_shards` share one worker, which converts it once.
_SHARES_THE_SHARDS = pytest.mark.xdist_group("small_shards")


@pytest.fixture(scope="module")
def small_shards(small_mnist_dir, tmp_path_factory):
  """The small MNIST copy converted, in shards of ~100 KB (several each)."""
  output = str(tmp_path_factory.mktemp("shards") / "mnist")
  result = _convert(small_mnist_dir, output, "--shard_mb=1")
  assert result.returncode == 0, result.stderr
  assert "converted" in result.stdout
  return output


@_SHARES_THE_SHARDS
def test_the_converted_dataset_reads_back_as_the_source(small_mnist_dir,
                                                        small_shards):
  source = sources.load(DataConfig(data_dir=small_mnist_dir))
  converted = sources.load(DataConfig(data_dir=small_shards))
  meta = json.load(open(os.path.join(small_shards, shards.METADATA)))
  assert meta["splits"]["train"]["num_examples"] == 2048
  assert meta["splits"]["train"]["classes"] == list(range(10))
  train = converted.train_images
  assert isinstance(train, shards.ShardedSplit) and train.shape == (
      2048, 28, 28, 1)
  np.testing.assert_array_equal(np.asarray(train), source.train_images)
  np.testing.assert_array_equal(converted.train_labels, source.train_labels)
  np.testing.assert_array_equal(converted.test_images, source.test_images)
  # By index, in any order, across shard boundaries.
  order = np.random.default_rng(0).permutation(2048)[:300]
  np.testing.assert_array_equal(train.read(order), source.train_images[order])
  for binarize in ("dynamic", "static"):
    np.testing.assert_array_equal(
        pipeline.target_mean(train, binarize),
        pipeline.target_mean(source.train_images, binarize))
  # What a process holds is the labels, not the images.
  assert train.nbytes == 2048 * 8


_config = functools.partial(
    helpers.run_config, data={"max_train_examples": 1000}, batch_size=32,
    train_steps=12, steps_per_loop=5, log_every=6, checkpoint_every=0)



@pytest.mark.parametrize("model,flags", [
    ("dense", {}),                      # XLA, many steps per execution.
    ("conv", {}),                       # The on-device loop without XLA.
    ("conv", {"steps_per_loop": 1}),    # One step per call.
    ("dense", {"jit_compile": False, "train_steps": 40}),  # Past an epoch.
    # The test split read by index too: the NLL and the figures.
    ("dense", {"eval_nll_samples": 3, "figures": True}),
])
@_SHARES_THE_SHARDS
def test_training_from_shards_gives_the_sources_weights(
    small_mnist_dir, small_shards, tmp_path, model, flags):
  from_source = runner.run(_config(small_mnist_dir, tmp_path / "a", model,
                                   **flags), stream=io.StringIO())
  from_shards = runner.run(_config(small_shards, tmp_path / "b", model,
                                   **flags), stream=io.StringIO())
  assert from_shards.weights_fingerprint == from_source.weights_fingerprint
  assert from_shards.test_metrics == from_source.test_metrics
  assert [os.path.basename(p) for p in from_shards.figure_paths] == [
      os.path.basename(p) for p in from_source.figure_paths]


@_SHARES_THE_SHARDS
def test_a_resumed_run_from_shards_ends_on_the_uninterrupted_weights(
    small_shards, tmp_path):
  straight = runner.run(_config(small_shards, tmp_path / "a", train_steps=20,
                                checkpoint_every=5), stream=io.StringIO())
  runner.run(_config(small_shards, tmp_path / "b", train_steps=7,
                     checkpoint_every=5), stream=io.StringIO())
  resumed = runner.run(_config(small_shards, tmp_path / "b", train_steps=20,
                               checkpoint_every=5), stream=io.StringIO())
  assert resumed.weights_fingerprint == straight.weights_fingerprint


def test_npy_arrays_convert_with_and_without_labels(tmp_path, mnist):
  arrays = tmp_path / "arrays"
  arrays.mkdir()
  np.save(arrays / "x_train.npy", mnist.train_images[:300, ..., 0])
  np.save(arrays / "x_test.npy", mnist.test_images[:50, ..., 0])
  np.save(arrays / "y_train.npy", mnist.train_labels[:300].astype(np.int32))
  result = _convert(arrays, tmp_path / "out")
  assert result.returncode == 0, result.stderr
  converted = sources.load(DataConfig(data_dir=str(tmp_path / "out")))
  np.testing.assert_array_equal(np.asarray(converted.train_images),
                                mnist.train_images[:300])
  np.testing.assert_array_equal(converted.train_labels,
                                mnist.train_labels[:300])
  assert (converted.test_labels == -1).all()  # No y_test.npy: unlabelled.


def test_a_conversion_never_writes_into_a_non_empty_directory(
    small_mnist_dir, tmp_path):
  output = tmp_path / "taken"
  output.mkdir()
  (output / "keep.txt").write_text("mine")
  result = _convert(small_mnist_dir, output)
  assert result.returncode == 2
  assert_one_line_error(result, "--output_dir=", "not an empty directory")
  assert os.listdir(output) == ["keep.txt"]
  assert not [n for n in os.listdir(tmp_path) if ".partial-" in n]


def test_a_cut_short_conversion_leaves_nothing_that_reads_as_whole(
    tmp_path, mnist):
  def chunks():
    yield mnist.train_images[:100], mnist.train_labels[:100]
    raise KeyboardInterrupt  # The user's ^C mid-conversion.
  with pytest.raises(KeyboardInterrupt):
    shard_writer.write(str(tmp_path / "out"), {"train": chunks(), "test": []},
                       (28, 28, 1), "test")
  assert os.listdir(tmp_path) == []


def _damaged_copy(small_shards, tmp_path):
  import shutil
  copy = tmp_path / "copy"
  shutil.copytree(small_shards, copy)
  first = sorted(n for n in os.listdir(copy) if n.startswith("train-0"))[0]
  return copy, copy / first


@pytest.mark.parametrize("damage,fragment", [
    ("delete", "missing (listed in vae_engine_shards.json)"),
    ("truncate", "bytes, but vae_engine_shards.json says"),
    ("flip", "SHA-256 differs"),
    ("metadata", "not the metadata of a converted dataset"),
    ("count", "records of 792 bytes, but"),
])
@_SHARES_THE_SHARDS
def test_a_damaged_dataset_is_one_error_naming_the_file(
    small_shards, small_mnist_dir, tmp_path, damage, fragment):
  copy, shard = _damaged_copy(small_shards, tmp_path)
  metadata = copy / shards.METADATA
  if damage == "delete":
    shard.unlink()
  elif damage == "truncate":
    shard.write_bytes(shard.read_bytes()[:-100])
  elif damage == "flip":
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 1
    shard.write_bytes(bytes(data))
  elif damage == "metadata":
    metadata.write_text('{"format": "vae-engine-shards/1", "splits": {}')
  else:  # The metadata's count disagrees with the shard.
    meta = json.loads(metadata.read_text())
    meta["splits"]["train"]["shards"][0]["num_examples"] += 1
    metadata.write_text(json.dumps(meta))
  with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(
      ")", r"\)")):
    sources.load(DataConfig(data_dir=str(copy)))
  # The command line: one line, exit 2, before training.
  result = run_in_process(f"--data_dir={copy}",
                          f"--model_dir={tmp_path / 'run'}",
                          "--train_steps=2", "--nofigures")
  assert result.returncode == 2, result.stderr[-2000:]
  assert_one_line_error(result, fragment)
  assert not os.path.exists(tmp_path / "run" / "checkpoint")


class _CountingSplit(shards.ShardedSplit):
  """Records the indices each read asks for."""

  def __init__(self, split):
    self.__dict__.update(split.__dict__)
    self.asked = []

  def read(self, indices):
    self.asked.append(np.asarray(indices).copy())
    return super().read(indices)


@_SHARES_THE_SHARDS
def test_each_input_pipeline_reads_only_its_replicas_slices(small_shards):
  """Under tf.distribute (2 pipelines of 1 replica each, as in a 2-worker
  job) a pipeline reads its half of each global batch and nothing else."""
  import tensorflow as tf
  options = pipeline.PipelineOptions(64, 0, "dynamic", 0.0, 2)
  split = sources.load(DataConfig(data_dir=small_shards)).train_images
  whole = np.concatenate([
      pipeline.example_order(options, len(split), step, 0, 64).numpy()
      for step in range(5)])
  for pipeline_id in range(2):
    counting = _CountingSplit(split)
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline_id,
        num_replicas_in_sync=2)
    for _ in pipeline.train_dataset(counting, options, 0, 5, context):
      pass
    # One read per element (in whatever order its threads ran them).
    expected = {tuple(whole[step * 64 + 32 * pipeline_id:][:32])
                for step in range(5)}
    assert {tuple(asked) for asked in counting.asked} == expected
    assert len(counting.asked) == 5


def _done(output):
  import re
  found = re.search(r"done: step (\d+), test ELBO (\S+) nats, weights (\w+)",
                    output)
  assert found, output[-3000:]
  return found.groups()


@pytest.mark.parametrize("job", ["mirrored", "two_workers"])
@_SHARES_THE_SHARDS
def test_a_distributed_job_from_shards_gives_the_sources_weights(
    small_mnist_dir, small_shards, tmp_path, job):
  """Mirrored over 2 logical CPUs, and a 2-worker job on 127.0.0.1 (each
  worker reading only its share): the same weights as from the IDX files."""
  from engine.cli import launch_local
  done = {}
  for name, data_dir in (("source", small_mnist_dir), ("shards", small_shards)):
    args = [f"--data_dir={data_dir}", f"--model_dir={tmp_path / name}",
            "--model=dense", "--batch_size=64", "--train_steps=20",
            "--steps_per_loop=5", "--max_train_examples=1000", "--nofigures",
            "--checkpoint_every=10", "--nojit_compile"]  # Not about XLA.
    if job == "mirrored":
      result = subprocess.run(
          [sys.executable, "-m", "engine.main", *args, "--strategy=mirrored",
           "--cpu_devices=2"], capture_output=True, text=True, timeout=300,
          cwd=REPO_ROOT, check=False)
      assert result.returncode == 0, result.stderr[-3000:]
      assert "2 replica(s)" in result.stdout
      done[name] = _done(result.stdout)
    else:
      processes = launch_local.start_workers(2, args, stdout=subprocess.PIPE)
      outputs = [p.communicate(timeout=300)[0] for p in processes]
      assert [p.returncode for p in processes] == [0, 0], outputs
      results = [_done(output) for output in outputs]
      assert results[0] == results[1]
      done[name] = results[0]
  assert done["shards"] == done["source"]


def _peak_rss_kb(*command):
  result = subprocess.run(["/usr/bin/time", "-v", *command],
                          capture_output=True, text=True, timeout=900,
                          cwd=REPO_ROOT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [l for l in result.stderr.splitlines()
          if "Maximum resident set size" in l][0]
  return int(line.split(":")[1])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/bin/time"),
                    reason="needs GNU time for peak RSS")
def test_a_2gb_dataset_trains_in_the_memory_of_a_50mb_one(tmp_path):
  """Converted and trained from shards, 2.1 GB of 64x64x3 images take no
  more memory than 49 MB of them: no process holds the dataset."""
  from tests.engine.data import synthetic
  peaks = {}
  for name, num_train in (("big", 174_000), ("small", 2_000)):
    arrays = tmp_path / name
    written = synthetic.write_npy_images(str(arrays), num_train, 2_000)
    converted = tmp_path / f"{name}-shards"
    convert = _peak_rss_kb(
        sys.executable, os.path.join(REPO_ROOT, "tools", "convert_dataset.py"),
        f"--data_dir={arrays}", f"--output_dir={converted}")
    for leftover in arrays.iterdir():  # Room on the disk for the next one.
      leftover.unlink()
    train = _peak_rss_kb(
        sys.executable, "-m", "engine.main", f"--data_dir={converted}",
        "--model=dense", "--batch_size=64", "--train_steps=200",
        "--eval_every=0", "--checkpoint_every=0", "--nofigures",
        f"--model_dir={tmp_path / (name + '-run')}")
    peaks[name] = (written, convert, train)
    if name == "big":
      assert written >= 2e9
      import shutil
      shutil.rmtree(converted)
  (_, convert_big, train_big), (_, convert_small, train_small) = (
      peaks["big"], peaks["small"])
  print(f"peak RSS, 2.1 GB vs 49 MB: convert {convert_big / 1024:.0f} vs "
        f"{convert_small / 1024:.0f} MB, train {train_big / 1024:.0f} vs "
        f"{train_small / 1024:.0f} MB")
  assert convert_big - convert_small < 300 * 1024
  assert train_big - train_small < 300 * 1024


def test_a_folder_of_images_converts_to_what_training_reads(tmp_path, mnist):
  from tests.helpers import write_png_folder
  folder = write_png_folder(tmp_path / "pngs", mnist, train=300, test=40)
  result = _convert(folder, tmp_path / "out", "--seed=5")
  assert result.returncode == 0, result.stderr[-2000:]
  converted = sources.load(DataConfig(data_dir=str(tmp_path / "out")))
  source = sources.load(DataConfig(data_dir=folder), 5)
  np.testing.assert_array_equal(np.asarray(converted.train_images),
                                source.train_images)
  np.testing.assert_array_equal(converted.train_labels, source.train_labels)
  np.testing.assert_array_equal(converted.test_images, source.test_images)


@pytest.mark.parametrize("kind", ["idx_raw", "npz"])
def test_idx_and_npz_stream_into_what_training_reads(small_mnist_dir,
                                                     tmp_path, mnist, kind):
  from engine.cli import convert_dataset
  if kind == "npz":
    source = str(tmp_path / "mnist.npz")
    np.savez(source, x_train=mnist.train_images[:300, ..., 0],
             y_train=mnist.train_labels[:300],
             x_test=mnist.test_images[:50, ..., 0])
  else:  # Raw IDX files, read 1 KB at a time: many chunks.
    import gzip
    import shutil
    source = str(tmp_path / "idx")
    os.makedirs(source)
    for name in os.listdir(small_mnist_dir):
      with gzip.open(os.path.join(small_mnist_dir, name)) as f, open(
          os.path.join(source, name[:-3]), "wb") as out:
        shutil.copyfileobj(f, out)
    convert_dataset._CHUNK_BYTES = 1024
  try:
    config = DataConfig(data_dir=source, image_size=(14, 14))
    name, splits, shape = convert_dataset._sources(config)
    assert shape == (14, 14, 1)
    if kind == "idx_raw":
      first = next(iter(splits["train"]))[0]
      assert len(first) == 1024 // 784  # A chunk, not the split.
      name, splits, shape = convert_dataset._sources(config)
    shard_writer.write(str(tmp_path / "out"), splits, shape, name)
  finally:
    convert_dataset._CHUNK_BYTES = 64 << 20
  converted = sources.load(DataConfig(data_dir=str(tmp_path / "out")))
  original = sources.load(config)
  np.testing.assert_array_equal(np.asarray(converted.train_images),
                                original.train_images)
  np.testing.assert_array_equal(converted.train_labels, original.train_labels)
  np.testing.assert_array_equal(np.asarray(converted.test_images),
                                original.test_images)
  np.testing.assert_array_equal(converted.test_labels, original.test_labels)
