"""Your own images: folders of image files and .npz files (engine.data.images)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from engine.run import finish
from engine.config import DataConfig
from engine.data import images
from engine.data import sources
from engine.errors import DataError
from tests.helpers import assert_one_line_error
from tests.helpers import run_in_process
from tests.helpers import write_png_folder


@pytest.fixture(scope="module")
def png_mnist_dir(tmp_path_factory, mnist):
  return write_png_folder(tmp_path_factory.mktemp("png_mnist"), mnist)


def test_a_png_folder_reads_as_the_idx_files_do(png_mnist_dir, mnist):
  loaded = sources.load(DataConfig(data_dir=png_mnist_dir))
  np.testing.assert_array_equal(loaded.train_images,
                                mnist.train_images[:2048])
  np.testing.assert_array_equal(loaded.train_labels,
                                mnist.train_labels[:2048])
  np.testing.assert_array_equal(loaded.test_images, mnist.test_images[:512])
  np.testing.assert_array_equal(loaded.test_labels, mnist.test_labels[:512])
  assert loaded.class_names == tuple("0123456789")  # The class folders.


def test_class_names_come_with_the_sources_that_have_them(
    small_mnist_dir, monkeypatch):
  """IDX files hold bare label numbers; Fashion-MNIST's known copy (IDX
  files too) gets its ten names."""
  assert sources.load(DataConfig(data_dir=small_mnist_dir)).class_names is None
  monkeypatch.setitem(sources.KNOWN_LOCAL_COPIES, "fashion_mnist",
                      (small_mnist_dir,))
  names = sources.load(DataConfig(dataset="fashion_mnist")).class_names
  assert len(names) == 10 and names[0] == "T-shirt/top"
  assert names[9] == "Ankle boot"


@pytest.mark.e2e
def test_png_folder_trains_to_the_idx_runs_weights_bit_for_bit(
    png_mnist_dir, small_mnist_dir, tmp_path):
  common = ["--model=dense", "--batch_size=64", "--train_steps=20",
            "--steps_per_loop=10", "--binarize=dynamic", "--nofigures"]
  for name, data_dir in (("idx", small_mnist_dir), ("png", png_mnist_dir)):
    result = run_in_process(*common, f"--data_dir={data_dir}",
                            f"--model_dir={tmp_path / name}")
    assert result.returncode == 0, result.stderr
  assert (finish.read_result(str(tmp_path / "idx")).weights_fingerprint
          == finish.read_result(str(tmp_path / "png")).weights_fingerprint)


def test_an_npz_reads_as_keras_mnist_npz(tmp_path, mnist):
  path = str(tmp_path / "mnist.npz")
  np.savez(path, x_train=mnist.train_images[:300, ..., 0],
           y_train=mnist.train_labels[:300],
           x_test=mnist.test_images[:100, ..., 0])
  loaded = sources.load(DataConfig(data_dir=path))
  np.testing.assert_array_equal(loaded.train_images, mnist.train_images[:300])
  np.testing.assert_array_equal(loaded.train_labels, mnist.train_labels[:300])
  assert loaded.test_images.shape == (100, 28, 28, 1)
  assert set(loaded.test_labels) == {-1}  # No y_test: no labels.


def _rgb_folder(directory, sizes, classes=("cats", "dogs")):
  rng = np.random.default_rng(0)
  for i, size in enumerate(sizes):
    folder = os.path.join(directory, classes[i % len(classes)])
    os.makedirs(folder, exist_ok=True)
    tf.io.write_file(os.path.join(folder, f"{i:03d}.png"), tf.io.encode_png(
        rng.integers(0, 256, (*size, 3), dtype=np.uint8)))
  return str(directory)


def test_without_a_test_folder_a_seeded_fraction_is_held_out(tmp_path):
  directory = _rgb_folder(tmp_path, [(8, 8)] * 40)
  config = DataConfig(data_dir=directory, test_fraction=0.25)
  first, again = sources.load(config, seed=1), sources.load(config, seed=1)
  other = sources.load(config, seed=2)
  assert len(first.test_images) == 10 and len(first.train_images) == 30
  np.testing.assert_array_equal(first.test_images, again.test_images)
  assert not np.array_equal(first.test_images, other.test_images)
  assert set(first.train_labels) <= {0, 1}  # cats, dogs.
  assert first.image_shape == (8, 8, 3)


def test_image_size_crops_to_the_aspect_ratio_then_resizes_and_channels_convert(
    tmp_path):
  directory = _rgb_folder(tmp_path, [(40, 20)] * 4)
  loaded = sources.load(DataConfig(data_dir=directory, image_size=(10, 10),
                                   channels=1, test_fraction=0.5))
  assert loaded.image_shape == (10, 10, 1)
  # The crop is the centre 20x20: a constant image stays constant.
  constant = np.full((40, 20, 3), 77, np.uint8)
  resized = images._crop_and_resize(tf.constant(constant), (10, 10)).numpy()
  assert resized.shape == (10, 10, 3) and set(resized.ravel()) == {77}


def test_bad_folders_are_one_line_errors_naming_the_files(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataError, match="no training images"):
    sources.load(DataConfig(data_dir=str(empty)))
  mixed = _rgb_folder(tmp_path / "mixed", [(8, 8), (8, 8), (9, 8), (8, 8)])
  with pytest.raises(DataError, match=r"mixed sizes: .*000\.png is 8x8x3, "
                     r".*002\.png is 9x8x3; pass --image_size"):
    sources.load(DataConfig(data_dir=mixed, test_fraction=0.25))
  corrupt = _rgb_folder(tmp_path / "corrupt", [(8, 8)] * 4)
  (tmp_path / "corrupt" / "dogs" / "001.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match=r"dogs/001\.png: not a readable image"):
    sources.load(DataConfig(data_dir=corrupt, test_fraction=0.25))


def test_a_dataset_too_large_for_memory_is_refused_before_decoding(tmp_path):
  directory = _rgb_folder(tmp_path, [(8, 8)] * 4)
  with pytest.raises(DataError, match=r"4 images of 8x8x3 need .* GiB .* "
                     r"--image_size=H,W .* --max_train_examples=N"):
    images.load_folder(directory, images.Conversion(), 0.5, 0,
                       memory_limit_bytes=100)


@pytest.mark.parametrize("flag,fragment", [
    ("--test_fraction=1.5", "--test_fraction=1.5: must be between 0 and 1"),
    ("--test_fraction=0", "--test_fraction=0.0: must be between 0 and 1"),
    ("--channels=2", "--channels=2: must be 1 or 3"),
    ("--image_size=0", "--image_size"),
])
@pytest.mark.e2e
def test_bad_conversion_flags(flag, fragment):
  assert_one_line_error(run_in_process(flag), fragment)


@pytest.mark.e2e
def test_an_empty_folder_from_the_command_line(tmp_path):
  assert_one_line_error(run_in_process(f"--data_dir={tmp_path}",
                                       f"--model_dir={tmp_path}/m"),
                        f"--data_dir={tmp_path}: no training images")


def test_a_folder_streams_in_chunks_as_it_loads(tmp_path, mnist):
  """`stream_folder` (what convert_dataset writes) gives `load_folder`'s
  arrays chunk by chunk: the same split drawn with the same seed, the same
  order and labels."""
  folder = tmp_path / "flat"
  for i in range(60):  # Class folders, no test/: --test_fraction holds out.
    (folder / str(mnist.train_labels[i])).mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(folder / str(mnist.train_labels[i]) / f"{i:03d}.png"),
                     tf.io.encode_png(mnist.train_images[i]))
  conversion = images.Conversion(None, None)
  loaded = images.load_folder(str(folder), conversion, 0.25, seed=3)
  streamed, shape = images.stream_folder(str(folder), conversion, 0.25,
                                         seed=3, chunk=7)
  assert shape == (28, 28, 1)
  for split in ("train", "test"):
    chunks = list(streamed[split])
    assert max(len(c[0]) for c in chunks) == 7 and len(chunks) > 1
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]),
                                  loaded[f"{split}_images"])
    np.testing.assert_array_equal(np.concatenate([c[1] for c in chunks]),
                                  loaded[f"{split}_labels"])
