"""A TFDS dataset prepared as ArrayRecord is read by index, and trains to the
weights its own examples give in memory.

The dataset is a real TFDS builder, prepared by TFDS's own
`download_and_prepare(file_format="array_record")` from the small MNIST
copy (nothing is downloaded), and read back through `as_data_source`.
"""

import io
import numpy as np
import pytest
import tensorflow_datasets as tfds

from engine.config import DataConfig
from engine.data import sources
from engine.data import tfds_source
from engine.run import runner
from tests.helpers import write_idx
from tests import helpers

NAME = "vae_engine_small_mnist"


class VaeEngineSmallMnist(tfds.core.GeneratorBasedBuilder):
  """The small MNIST copy as a TFDS dataset (arrays set by the fixture)."""

  VERSION = tfds.core.Version("1.0.0")
  arrays = {}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "label": tfds.features.ClassLabel(num_classes=10)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split)
            for split in ("train", "test")}

  def _generate_examples(self, split):
    images, labels = self.arrays[split]
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image, "label": int(label)}


@pytest.fixture(scope="module")
def tfds_dir(mnist, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("tfds"))
  VaeEngineSmallMnist.arrays = {
      "train": (mnist.train_images[:1000], mnist.train_labels[:1000]),
      "test": (mnist.test_images[:200], mnist.test_labels[:200])}
  builder = VaeEngineSmallMnist(data_dir=directory,
                                file_format="array_record")
  builder.download_and_prepare()
  return directory


def _config(model_dir, tfds_dir, data_dir=None, **train):
  return helpers.run_config(
      data_dir, model_dir, data={"dataset": NAME, "tfds_data_dir": tfds_dir},
      **{"batch_size": 32, "train_steps": 12, "steps_per_loop": 5,
         "log_every": 6, "checkpoint_every": 0, **train})



@pytest.mark.e2e
def test_an_array_record_tfds_dataset_trains_by_index_to_its_weights(
    tfds_dir, tmp_path):
  data = sources.load(DataConfig(dataset=NAME, tfds_data_dir=tfds_dir))
  train = data.train_images
  assert isinstance(train, tfds_source.TfdsImages)
  assert train.shape == (1000, 28, 28, 1) and train.nbytes == 1000 * 8
  assert "read by index" in data.source
  # The same examples, in TFDS's order, written out as IDX files.
  images = np.asarray(train)
  assert sorted(map(bytes, images)) == sorted(
      map(bytes, VaeEngineSmallMnist.arrays["train"][0]))
  order = np.random.default_rng(0).permutation(1000)[:64]
  np.testing.assert_array_equal(train.read(order), images[order])
  idx_dir = tmp_path / "idx"
  idx_dir.mkdir()
  for split, split_images, labels in (
      ("train", images, data.train_labels),
      ("t10k", np.asarray(data.test_images), data.test_labels)):
    write_idx(str(idx_dir / f"{split}-images-idx3-ubyte.gz"),
              split_images[..., 0])
    write_idx(str(idx_dir / f"{split}-labels-idx1-ubyte.gz"), labels)
  by_index = runner.run(_config(tmp_path / "a", tfds_dir),
                        stream=io.StringIO())
  in_memory = runner.run(_config(tmp_path / "b", None, data_dir=str(idx_dir)),
                         stream=io.StringIO())
  assert by_index.weights_fingerprint == in_memory.weights_fingerprint
  assert by_index.test_metrics == in_memory.test_metrics


def test_a_tfds_dataset_carries_its_label_names(tfds_dir):
  data = sources.load(DataConfig(dataset=NAME, tfds_data_dir=tfds_dir))
  # ClassLabel(num_classes=10) names its classes "0" to "9".
  assert data.class_names == tuple("0123456789")


def test_convert_dataset_streams_a_tfds_dataset_into_shards(tfds_dir,
                                                            tmp_path):
  from engine.cli import convert_dataset
  from engine.data import shard_writer
  config = DataConfig(dataset=NAME, tfds_data_dir=tfds_dir)
  source, splits, shape = convert_dataset._sources(config)
  shard_writer.write(str(tmp_path / "shards"), splits, shape, source)
  converted = sources.load(DataConfig(data_dir=str(tmp_path / "shards")))
  original = sources.load(config)
  assert source == f"tensorflow-datasets:{NAME}"
  # TFDS's as_dataset order is its index order: the same arrays.
  np.testing.assert_array_equal(np.asarray(converted.train_images),
                                np.asarray(original.train_images))
  np.testing.assert_array_equal(converted.train_labels,
                                original.train_labels)
  np.testing.assert_array_equal(converted.test_images, original.test_images)
