"""Finding and loading datasets: IDX dirs, Debian's copy, tensorflow-datasets."""

import os
import shutil
import socket
import time

import numpy as np
import pytest

from engine.config import DataConfig
from engine.data import sources
from engine.errors import DataError
from tests.helpers import assert_one_line_error, run_cli, write_idx

FASHION = "/usr/share/datasets/fashion-mnist"


def test_loads_real_mnist(mnist):
  assert mnist.train_images.shape == (60000, 28, 28, 1)
  assert mnist.test_images.shape == (10000, 28, 28, 1)
  assert mnist.train_labels.dtype == np.int64
  assert mnist.image_shape == (28, 28, 1)


def test_raw_files_work_too(tmp_path, small_mnist_dir):
  for name in os.listdir(small_mnist_dir):
    import gzip
    with gzip.open(os.path.join(small_mnist_dir, name)) as src:
      (tmp_path / name[:-3]).write_bytes(src.read())
  dataset = sources.load(DataConfig(data_dir=str(tmp_path)))
  assert dataset.train_images.shape == (2048, 28, 28, 1)


def test_max_train_examples(small_mnist_dir):
  dataset = sources.load(DataConfig(data_dir=small_mnist_dir,
                                    max_train_examples=100))
  assert len(dataset.train_images) == len(dataset.train_labels) == 100
  assert len(dataset.test_images) == 512


def test_missing_files_are_named(tmp_path, small_mnist_dir):
  shutil.copy(os.path.join(small_mnist_dir, "train-images-idx3-ubyte.gz"),
              tmp_path)
  with pytest.raises(DataError, match=r"--data_dir=.*missing IDX file\(s\) "
                     r"train-labels-idx1-ubyte, t10k-images"):
    sources.load(DataConfig(data_dir=str(tmp_path)))


def test_image_label_count_mismatch(tmp_path, small_mnist_dir):
  for name in os.listdir(small_mnist_dir):
    shutil.copy(os.path.join(small_mnist_dir, name), tmp_path)
  write_idx(str(tmp_path / "t10k-labels-idx1-ubyte.gz"),
            np.zeros(511, np.uint8))
  with pytest.raises(DataError, match="holds 512 images but .*t10k-labels"
                     ".* holds 511 labels"):
    sources.load(DataConfig(data_dir=str(tmp_path)))


@pytest.mark.skipif(not os.path.isdir(FASHION),
                    reason="Debian's dataset-fashion-mnist is not installed "
                    "(make test installs it)")
def test_fashion_mnist_comes_from_debian_copy():
  dataset = sources.load(DataConfig(dataset="fashion_mnist"))
  assert dataset.source == FASHION
  assert dataset.train_images.shape == (60000, 28, 28, 1)
  assert dataset.test_labels.max() == 9


def test_tfds_dataset_by_name_with_mock_data(monkeypatch):
  import tensorflow_datasets as tfds
  # mock_data fakes the prepared files' contents but not is_prepared(); the
  # download path is covered by the offline test below.
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared",
                      lambda self: True)
  with tfds.testing.mock_data(num_examples=40):
    dataset = sources.load_tfds("mnist", timeout_s=30)
  assert dataset.train_images.shape == (40, 28, 28, 1)
  assert dataset.train_images.dtype == np.uint8
  assert dataset.source == "tensorflow-datasets:mnist"


def test_unknown_tfds_dataset():
  with pytest.raises(DataError, match="--dataset=no_such_dataset_xyz"):
    sources.load(DataConfig(dataset="no_such_dataset_xyz"))


def _closed_loopback_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.e2e
def test_offline_download_fails_fast_and_says_data_dir(tmp_path, monkeypatch):
  # All HTTP(S) goes to a closed loopback port: the machine looks offline and
  # nothing leaves it.
  proxy = f"http://127.0.0.1:{_closed_loopback_port()}"
  for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
    monkeypatch.setenv(name, proxy)
  monkeypatch.delenv("NO_PROXY", raising=False)
  monkeypatch.delenv("no_proxy", raising=False)
  # TFDS retries until the deadline: a short one, and 5 s beyond it.
  started = time.monotonic()
  with pytest.raises(DataError, match="--dataset=kmnist.*--data_dir"):
    sources.load_tfds("kmnist", timeout_s=10, data_dir=str(tmp_path))
  assert time.monotonic() - started < 15


@pytest.mark.e2e
def test_offline_without_data_dir_is_one_line_naming_the_dataset(tmp_path):
  """A newcomer's `vae-engine` offline with no --data_dir: TFDS warned about
  a leftover version folder first, and the hint named Fashion-MNIST's
  Debian package for MNIST. Now the one line, with a hint for any data."""
  (tmp_path / "tfds" / "mnist" / "3.0.1").mkdir(parents=True)  # Leftover.
  proxy = f"http://127.0.0.1:{_closed_loopback_port()}"
  # As a user runs it: TF_CPP_MIN_LOG_LEVEL unset (engine.startup sets it in
  # this process once imported, and a child that inherits it shows all of
  # TensorFlow's start-up lines, as for a user who set it).
  env = {name: value for name, value in os.environ.items()
         if name.lower() != "no_proxy" and name != "TF_CPP_MIN_LOG_LEVEL"}
  env.update({name: proxy for name in ("HTTP_PROXY", "HTTPS_PROXY",
                                       "http_proxy", "https_proxy")})
  result = run_cli("--dataset=mnist", f"--tfds_data_dir={tmp_path}/tfds",
                   "--download_timeout=5", f"--model_dir={tmp_path}/m",
                   env=env)
  line = assert_one_line_error(result, "--dataset=mnist",
                               "pass --data_dir=DIR with the images")
  assert "fashion" not in line
  assert result.stderr.strip() == line, result.stderr
