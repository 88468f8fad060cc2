"""The fuzz tier: random .npz contents and dtypes, random image bytes in a
folder, random flag values. Every outcome is a dataset (a finished run, for
flags) or one of the engine's one-line errors, never another exception.

Reproducible like every randomized test here (tests/conftest.py); the cases
it found are pinned with `@example`.
"""

import io
import os

import hypothesis
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.run import parts
from engine.config import DataConfig, ModelConfig, RunConfig
from engine.data import sources
from engine.errors import TrainingDiverged, UserError, one_line

_DTYPES = (np.uint8, np.int8, np.int64, np.uint64, np.float32, np.float64,
           np.bool_, "U3", np.complex64)


@st.composite
def arrays(draw):
  dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
  shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=4)))
  size = int(np.prod(shape))
  if dtype.kind == "U":
    values = draw(st.lists(st.sampled_from(["cat", "dog", "7"]),
                           min_size=size, max_size=size))
  else:
    values = draw(st.lists(st.integers(-300, 300), min_size=size,
                           max_size=size))
  if dtype.kind == "U":
    return np.array(values, dtype=dtype).reshape(shape)
  # Wrapped into the dtype's range, as data written by other code is.
  return np.array(values, dtype=np.int64).astype(dtype).reshape(shape)


def _assert_a_users_error(error: UserError) -> None:
  message = one_line(str(error))
  assert message and "\n" not in message
  assert "{{" not in message and "Traceback" not in message


def _load(path, conditional=False):
  """The data and, for a conditional run, its classes; or a UserError."""
  try:
    data = sources.load(DataConfig(data_dir=str(path)))
    classes = parts.num_classes(
        RunConfig(model=ModelConfig(conditional=conditional)), data)
  except UserError as e:
    _assert_a_users_error(e)
    return None
  # What was accepted is what the engine promises to train on.
  for split in ("train", "test"):
    images = getattr(data, f"{split}_images")
    labels = getattr(data, f"{split}_labels")
    assert images.dtype == np.uint8 and images.ndim == 4 and len(images)
    assert labels.dtype == np.int64 and labels.shape == (len(images),)
  assert data.train_images.shape[1:] == data.test_images.shape[1:]
  if conditional:
    assert classes >= 2 and set(np.unique(data.train_labels)) == set(
        range(classes))
  return data


@st.composite
def npz_contents(draw):
  """A valid Keras-style .npz, then up to two arrays replaced or removed."""
  rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 6))
  channels = draw(st.sampled_from([(), (1,), (3,)]))
  counts = {"train": draw(st.integers(1, 12)), "test": draw(st.integers(1, 6))}
  classes = draw(st.integers(1, 4))
  contents = {}
  for split, count in counts.items():
    contents[f"x_{split}"] = np.zeros((count, rows, cols, *channels), np.uint8)
    contents[f"y_{split}"] = np.arange(count) % classes
  for key in draw(st.lists(st.sampled_from(sorted(contents)), max_size=2,
                           unique=True)):
    if draw(st.booleans()):
      del contents[key]
    else:
      contents[key] = draw(arrays())
  return contents


@settings(max_examples=200, deadline=None,
          suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(contents=npz_contents(), conditional=st.booleans())
@example(contents={"x_train": np.zeros((3, 2, 2), np.uint8),
                   "x_test": np.zeros((1, 2, 2), np.uint8),
                   "y_train": np.array([0, 1, 1], np.uint64),
                   "y_test": np.array([9], np.int64)}, conditional=True)
@example(contents={"x_train": np.zeros((2, 2, 2), np.uint8),
                   "x_test": np.zeros((1, 3, 2), np.uint8)},
         conditional=False)
def test_random_npz_contents(tmp_path, contents, conditional):
  path = tmp_path / "data.npz"
  np.savez(path, **contents)
  _load(path, conditional)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(st.binary(max_size=64), min_size=0, max_size=3),
       truncate=st.integers(0, 80), sizes=st.lists(
           st.tuples(st.integers(1, 6), st.integers(1, 6),
                     st.sampled_from([1, 3])), min_size=1, max_size=4))
def test_random_image_bytes_in_a_folder(tmp_path, blobs, truncate, sizes):
  import tensorflow as tf
  folder = tmp_path / "images"
  folder.mkdir(exist_ok=True)
  for name in os.listdir(folder):
    os.remove(folder / name)
  for i, (height, width, channels) in enumerate(sizes * 3):
    png = tf.io.encode_png(tf.zeros([height, width, channels],
                                    tf.uint8)).numpy()
    (folder / f"{i:03d}.png").write_bytes(png)
  for i, blob in enumerate(blobs):
    (folder / f"blob{i}.png").write_bytes(blob)
  if truncate:
    (folder / "truncated.png").write_bytes(png[:truncate])
  _load(folder)


def test_a_truncated_zip_is_one_error(tmp_path):
  path = tmp_path / "data.npz"
  np.savez(path, x_train=np.zeros((4, 2, 2), np.uint8),
           x_test=np.zeros((2, 2, 2), np.uint8))
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  assert _load(path) is None


# Flags: each example is a whole (tiny) run, so fewer of them.

_FLAG_VALUES = {
    "batch_size": st.sampled_from(["0", "-1", "1", "7", "16", "10000",
                                   "3000000000", "x"]),
    "latent_dim": st.sampled_from(["0", "1", "3", "100000000", "-2"]),
    "learning_rate": st.sampled_from(["0", "1e-3", "1e6", "inf", "nan",
                                      "-1", "abc"]),
    "train_steps": st.sampled_from(["0", "1", "3", "-5"]),
    "steps_per_loop": st.sampled_from(["0", "1", "2", "1000000"]),
    "beta": st.sampled_from(["0", "1", "-1", "1e30", "nan"]),
    "noise_factor": st.sampled_from(["0", "0.5", "-0.1", "inf"]),
    "binarize": st.sampled_from(["none", "static", "dynamic", "bogus"]),
    "reconstruction_loss": st.sampled_from([
        "bernoulli", "gaussian", "discretized_logistic", "gaussian_learned",
        "l2"]),
    "objective": st.sampled_from(["elbo", "iwae", "x"]),
    "iw_samples": st.sampled_from(["1", "3", "0"]),
    "kl_warmup_steps": st.sampled_from(["0", "2", "-1"]),
    "free_bits": st.sampled_from(["0", "0.5", "-1"]),
    "image_size": st.sampled_from(["8", "8,12", "0", "5,5,5", "a,b",
                                   "100000,100000"]),
    "channels": st.sampled_from(["1", "3", "2"]),
    "max_train_examples": st.sampled_from(["1", "16", "0"]),
    "seed": st.sampled_from(["0", "-7", "99999999999"]),
    "model": st.sampled_from(["dense", "conv", "mlp", "iwae_mlp", "resnet"]),
    "optimizer": st.sampled_from(["adam", "sgd", "rmsprop"]),
    "eval_nll_samples": st.sampled_from(["0", "2", "-1"]),
    "conditional": st.sampled_from(["true", "false"]),
    "keep_checkpoints": st.sampled_from(["1", "0"]),
    "gaussian_stddev": st.sampled_from(["0.1", "0", "inf"]),
}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
  rng = np.random.default_rng(0)
  path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
  np.savez(path, x_train=rng.integers(0, 256, (32, 8, 8), np.uint8),
           y_train=np.arange(32) % 4,
           x_test=rng.integers(0, 256, (8, 8, 8), np.uint8),
           y_test=np.arange(8) % 4)
  return str(path)


def _run_flags(argv):
  """What `python -m engine.main argv` does, in this process: (exit
  status, the error line)."""
  import contextlib

  from absl import flags as absl_flags

  import flags
  from engine.run import runner

  fv = absl_flags.FlagValues()
  flags.define(fv)
  stderr = io.StringIO()
  try:
    with contextlib.redirect_stderr(stderr):
      flags.parse(["engine.main", *argv], fv)
  except SystemExit as e:
    lines = [line for line in stderr.getvalue().splitlines()
             if line.startswith("error:")]
    assert e.code == 2 and len(lines) == 1, stderr.getvalue()
    return 2, lines[0]
  try:
    runner.run(flags.to_config(fv), io.StringIO())
  except UserError as e:
    _assert_a_users_error(e)
    return 2, str(e)
  except TrainingDiverged as e:
    return 3, str(e)
  return 0, ""


@pytest.mark.slow
@settings(max_examples=30, deadline=None,
          suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(chosen=st.dictionaries(st.sampled_from(sorted(_FLAG_VALUES)),
                              st.none(), min_size=1, max_size=6),
       data=st.data())
def test_random_flag_values_end_in_a_run_or_one_error(tmp_path, tiny_npz,
                                                      chosen, data):
  argv = [f"--data_dir={tiny_npz}", "--batch_size=8", "--train_steps=2",
          "--steps_per_loop=1", "--log_every=1", "--checkpoint_every=0",
          "--nofigures", f"--model_dir={tmp_path}/run{len(os.listdir(tmp_path))}"]
  for name in sorted(chosen):
    argv.append(f"--{name}={data.draw(_FLAG_VALUES[name], label=name)}")
  status, _ = _run_flags(argv)
  assert status in (0, 2, 3)
