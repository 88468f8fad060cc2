"""The hostile inputs of issue 21, each as a user meets it: one `error:` line
naming the culprit, exit status 2, before training where that can be known,
nothing of the user's deleted (or a correct run, where that is the right
answer). `pytest -s -k hostile` prints the table for the closing note."""

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

import models
from engine.serving import export
from tests.helpers import REPO_ROOT, write_idx
from tests.helpers import run_tool_in_process
from tests.helpers import assert_one_line_error, last_wins, run_cli
from tests.helpers import run_in_process
from tests.engine.io.mounts import needs_mounts, run_with_mounts

pytestmark = pytest.mark.e2e

ENGINE = [sys.executable, "-m", "engine.main"]


def _flags(model_dir, *extra, model="dense"):
  # Without XLA's compile: these runs are about what bad input gets.
  return last_wins(f"--model={model}", "--train_steps=10",
                   "--steps_per_loop=5", "--batch_size=32", "--nofigures",
                   "--nojit_compile", f"--model_dir={model_dir}", *extra)


def _train(model_dir, *extra):
  """The engine, in this process, on `_flags(model_dir, *extra)`."""
  return run_in_process(*_flags(model_dir, *extra))


def _report(case, line):
  print(f"\nHOSTILE | {case} | {line}")


def _no_training(model_dir):
  """Nothing was trained: no checkpoint was written."""
  return not (os.path.isdir(model_dir) and any(
      name.startswith("ckpt-") for name in os.listdir(model_dir)))


def _npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def _images(count, side=8, channels=None, seed=0):
  shape = (count, side, side) + ((channels,) if channels else ())
  return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


# 1. Data loss: an export must never replace what the engine did not write.

@pytest.mark.parametrize("kind", ["directory", "file"])
def test_export_never_replaces_a_users_files(tmp_path, small_mnist_dir, kind):
  export_dir = tmp_path / "X"
  export_dir.mkdir()
  if kind == "directory":
    (export_dir / "10").mkdir()
    precious = export_dir / "10" / "notes.txt"
  else:
    precious = export_dir / "10"
  precious.write_text("precious")
  result = _train(tmp_path / "m", f"--data_dir={small_mnist_dir}",
                  "--max_train_examples=512", f"--export_dir={export_dir}")
  line = assert_one_line_error(result, "--export_dir", f"{export_dir}/10",
                               "did not write")
  assert result.returncode == 2
  assert precious.read_text() == "precious"
  assert _no_training(tmp_path / "m")
  _report(f"a user's {kind} at <export_dir>/<step>", line)


def test_the_exporter_refuses_and_keeps_a_users_files_itself(tmp_path):
  """The library call too (tools/export.py, or code): refused, kept, and a
  user's entries that merely look temporary are left alone."""
  from engine.errors import UserError
  vae = models.get("dense").build((28, 28, 1), 2)
  (tmp_path / "3").mkdir()
  (tmp_path / "3" / "notes.txt").write_text("mine")
  (tmp_path / ".tmp-notes").write_text("mine too")
  (tmp_path / ".old-3-notes").mkdir()
  with pytest.raises(UserError, match="did not write"):
    export.export(vae, str(tmp_path), version=3)
  assert (tmp_path / "3" / "notes.txt").read_text() == "mine"
  path = export.export(vae, str(tmp_path), version=4)
  assert export.is_engine_export(path)
  assert sorted(os.listdir(tmp_path)) == [".old-3-notes", ".tmp-notes", "3",
                                          "4"]
  # An export of ours is replaced by the next one of the same version.
  assert export.export(vae, str(tmp_path), version=4) == path


# 2. --export_dir that cannot take the export: found before training.

def test_export_dir_that_is_a_file(tmp_path, small_mnist_dir):
  (tmp_path / "file").write_text("x")
  result = _train(tmp_path / "m", f"--data_dir={small_mnist_dir}",
                  f"--export_dir={tmp_path}/file")
  line = assert_one_line_error(result, "--export_dir", "not writable",
                               "not a directory")
  assert result.returncode == 2 and _no_training(tmp_path / "m")
  _report("--export_dir is a file", line)


@needs_mounts
@pytest.mark.parametrize("case,size,read_only,reason", [
    ("read-only", "4m", True, "Read-only file system"),
    ("full", "64k", False, "No space left on device")])
def test_export_dir_read_only_or_full(tmp_path, small_mnist_dir, case, size,
                                      read_only, reason):
  target = tmp_path / "exports"
  result = run_with_mounts(
      [*ENGINE, *_flags(tmp_path / "m", f"--data_dir={small_mnist_dir}",
                        f"--export_dir={target}")],
      {str(target): (size, read_only)})
  line = assert_one_line_error(result, "--export_dir", reason)
  assert result.returncode == 2 and _no_training(tmp_path / "m")
  _report(f"--export_dir {case}", line)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, small_mnist_dir):
  """A run the export tool reads (and writes nothing into), trained once for
  the module."""
  model_dir = tmp_path_factory.mktemp("trained") / "m"
  trained = _train(model_dir, f"--data_dir={small_mnist_dir}")
  assert trained.returncode == 0, trained.stderr
  return model_dir


@needs_mounts
@pytest.mark.parametrize("case,size,read_only,reason", [
    ("a file", None, False, "not a directory"),
    ("read-only", "4m", True, "Read-only file system"),
    ("full", "256k", False, "No space left on device")])
def test_export_tool_with_an_export_dir_that_cannot_take_it(
    tmp_path, trained_run, case, size, read_only, reason):
  target = tmp_path / "exports"
  command = [sys.executable, os.path.join(REPO_ROOT, "tools", "export.py"),
             f"--model_dir={trained_run}", f"--export_dir={target}"]
  if size is None:
    target.write_text("x")
    result = run_cli_tool(command)
  else:
    result = run_with_mounts(command, {str(target): (size, read_only)})
  line = assert_one_line_error(result, "--export_dir", reason)
  assert result.returncode == 2
  _report(f"tools/export.py, --export_dir {case}", line)


def run_cli_tool(command):
  import subprocess
  return subprocess.run(command, capture_output=True, text=True,
                        cwd=REPO_ROOT, timeout=600, check=False,
                        env=dict(os.environ, PYTHONPATH=REPO_ROOT))


@needs_mounts
def test_a_model_dir_that_fills_up_says_no_space_left(tmp_path,
                                                      small_mnist_dir):
  """Room for one checkpoint at the start, not for three: the save that
  fails says why in the OS's words, and the one before it is intact."""
  model_dir = tmp_path / "small" / "m"
  result = run_with_mounts(
      [*ENGINE, *_flags(model_dir, f"--data_dir={small_mnist_dir}",
                        "--train_steps=60", "--checkpoint_every=10",
                        "--steps_per_loop=10")],
      {str(tmp_path / "small"): ("16m", False)})
  line = assert_one_line_error(result, "--model_dir", "could not write",
                               "No space left on device", "is intact")
  assert "{{" not in line and "SaveV2" not in line
  _report("--model_dir fills up during training", line)


@needs_mounts
def test_a_model_dir_without_room_for_a_checkpoint(tmp_path, small_mnist_dir):
  model_dir = tmp_path / "small" / "m"
  result = run_with_mounts(
      [*ENGINE, *_flags(model_dir, f"--data_dir={small_mnist_dir}")],
      {str(tmp_path / "small"): ("1m", False)})
  line = assert_one_line_error(result, "--model_dir", "a checkpoint needs",
                               "No space left on device")
  assert "training dense" not in result.stdout
  _report("--model_dir without room for a checkpoint", line)


# 3. .npz labels that do not match the images.

@pytest.mark.parametrize("case,arrays,extra,fragments", [
    ("150 y_train for 160 images, --conditional",
     dict(x_train=_images(160), y_train=np.arange(150) % 10,
          x_test=_images(40), y_test=np.arange(40) % 10), ["--conditional"],
     ["y_train holds 150 labels for the 160 images"]),
    ("30 y_test for 40 images",
     dict(x_train=_images(160), y_train=np.arange(160) % 10,
          x_test=_images(40), y_test=np.arange(30) % 10), [],
     ["y_test holds 30 labels for the 40 images"]),
    ("string labels",
     dict(x_train=_images(160), y_train=np.array(["cat", "dog"] * 80),
          x_test=_images(40), y_test=np.array(["cat", "dog"] * 20)), [],
     ["y_train is <U3", "must be integers"]),
    ("a shorter y_train, unconditional",
     dict(x_train=_images(160), y_train=np.arange(100) % 10,
          x_test=_images(40)), [],
     ["y_train holds 100 labels for the 160 images"]),
    ("float labels",
     dict(x_train=_images(160), y_train=np.arange(160) % 10 + 0.5,
          x_test=_images(40)), [], ["y_train is float64", "integers"]),
    ("one label of 200, --conditional",
     dict(x_train=_images(160),
          y_train=np.concatenate([np.arange(159) % 10, [200]]),
          x_test=_images(40), y_test=np.arange(40) % 10), ["--conditional"],
     ["--conditional", "up to 200", "no training image of class 10"]),
])
def test_npz_labels_that_do_not_match(tmp_path, case, arrays, extra,
                                      fragments):
  data = _npz(tmp_path / "data.npz", **arrays)
  result = _train(tmp_path / "m", f"--data_dir={data}", *extra)
  line = assert_one_line_error(result, *fragments)
  assert result.returncode == 2 and _no_training(tmp_path / "m")
  _report(f".npz: {case}", line)


# 4. --data_dir that is a file other than an .npz.

def test_data_dir_that_is_a_png(tmp_path):
  png = tmp_path / "digit.png"
  png.write_bytes(tf.io.encode_png(tf.zeros([8, 8, 1], tf.uint8)).numpy())
  line = assert_one_line_error(
      _train(tmp_path / "m", f"--data_dir={png}"),
      f"--data_dir={png}", "not an .npz")
  _report("--data_dir is a PNG", line)


# 5. A model too large for memory: estimated before it is built.

def test_a_model_too_large_for_memory_is_refused_before_building(tmp_path):
  data = _npz(tmp_path / "data.npz", x_train=_images(2, channels=3),
              x_test=_images(1, channels=3))
  result = run_cli(*_flags(tmp_path / "m", f"--data_dir={data}",
                           "--image_size=4000,4000", "--channels=3",
                           "--batch_size=2"), timeout=120)
  line = assert_one_line_error(result, "--model=dense", "4000x4000x3",
                               "parameters", "GiB", "--image_size",
                               "--batch_size")
  assert "OOM" not in result.stderr and "ResourceExhausted" not in (
      result.stderr)
  _report("dense at 4000x4000x3", line)


def test_the_footprint_counts_parameters_without_allocating_them():
  from engine.run import preflight
  spec = models.get("dense")
  footprint = preflight.model_footprint(
      lambda: spec.create((4000, 4000, 3), 2))
  # Dense 48,000,000 -> 256 alone is 12.3 billion weights (49 GB).
  assert footprint.parameters > 24_000_000_000
  small = preflight.model_footprint(lambda: spec.create((28, 28, 1), 2))
  assert small.parameters == sum(spec.parameter_counts)
  assert small.activations_per_example > 784
  # Nothing was left for Keras to initialize later.
  import keras
  with keras.StatelessScope():
    pass


# 6. A --flagfile that is not UTF-8.

def test_a_flagfile_that_is_not_utf8(tmp_path):
  flagfile = tmp_path / "run.flags"
  flagfile.write_bytes(b"--model=dense\n--data_dir=\xff\xfe\n")
  line = assert_one_line_error(run_in_process(f"--flagfile={flagfile}"),
                               f"--flagfile={flagfile}", "not UTF-8",
                               "0xff")
  _report("non-UTF-8 --flagfile", line)


# 7. An export evaluated on data of another shape.

@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 3)])
def test_evaluating_an_export_on_data_of_another_shape(tmp_path, shape):
  path = export.export(models.get("dense").build((28, 28, 1), 2),
                       str(tmp_path / "e"), version=1)
  data = _npz(tmp_path / "data.npz",
              x_train=_images(64, shape[0], shape[2]),
              x_test=_images(16, shape[0], shape[2]))
  result = run_tool_in_process(
      "evaluate", f"--saved_model={path}", f"--data_dir={data}",
      "--model=dense", "--eval_nll_samples=2", "--batch_size=16")
  line = assert_one_line_error(result, f"--saved_model={path}",
                               "takes 28x28x1 images",
                               "x".join(map(str, shape)))
  assert result.returncode == 2
  _report(f"tools/evaluate.py --saved_model on {shape} data", line)


# 8. tools/sample.py's sizes and paths.

@pytest.fixture(scope="module")
def dense_export(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  return export.export(models.get("dense").build((28, 28, 1), 2), str(root),
                       version=1)


def _sample(*flags):
  return run_tool_in_process("sample", *flags)


@pytest.mark.parametrize("num,fragment", [
    ("3000000000", "--num"), ("0", "--num"), ("-3", "--num")])
def test_sample_counts_out_of_range(dense_export, tmp_path, num, fragment):
  result = _sample(f"--saved_model={dense_export}", f"--num={num}",
                   f"--output={tmp_path}/s")
  line = assert_one_line_error(result, fragment)
  assert result.returncode == 2 and "FATAL" not in result.stderr
  _report(f"tools/sample.py --num={num}", line)


@needs_mounts
def test_sample_count_larger_than_the_disk(dense_export, tmp_path):
  out = tmp_path / "small"
  result = run_with_mounts(
      [sys.executable, os.path.join(REPO_ROOT, "tools", "sample.py"),
       f"--saved_model={dense_export}", "--num=20000000",
       f"--output={out}/s"], {str(out): ("8m", False)})
  line = assert_one_line_error(result, "--output", "20,000,000",
                               "No space left on device")
  assert result.returncode == 2
  _report("tools/sample.py --num=20000000 (8 MB free)", line)


def test_sample_streams_many_samples_into_a_new_directory(dense_export,
                                                          tmp_path):
  """--output in a directory that does not exist yet: created; more samples
  than one chunk are streamed into one .npy."""
  output = tmp_path / "new" / "deeper" / "s"
  result = _sample(f"--saved_model={dense_export}", "--num=25000",
                   f"--output={output}")
  assert result.returncode == 0, result.stderr
  samples = np.load(f"{output}.npy", mmap_mode="r")
  assert samples.shape == (25000, 28, 28, 1) and samples.dtype == np.float32
  assert 0 <= samples[-100:].min() <= samples[-100:].max() <= 1
  # Chunks are fresh draws, not one chunk repeated.
  assert np.abs(samples[0] - samples[-1]).max() > 0
  assert os.path.exists(f"{output}.png")
  assert not [n for n in os.listdir(output.parent) if ".tmp" in n]


# 9. The tools' own flags.

@pytest.mark.parametrize("tool,flag", [
    ("chaos.py", "--bogus"), ("launch_local.py", "--bogus"),
    ("launch_local.py", "--num_workers=0"), ("export.py", "--bogus"),
    ("evaluate.py", "--bogus")])
def test_tools_refuse_bad_flags_in_one_line(tool, flag):
  result = run_cli_tool([sys.executable,
                         os.path.join(REPO_ROOT, "tools", tool), flag])
  line = assert_one_line_error(result, flag.split("=")[0].lstrip("-"))
  assert result.returncode == 2 and "FATAL" not in result.stderr
  _report(f"tools/{tool} {flag}", line)


# 10. Messages that were unclear.

def test_an_undecodable_image_is_named_without_tensorflows_op_names(tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(12):
    (folder / f"{i:03d}.png").write_bytes(
        tf.io.encode_png(tf.fill([8, 8, 1], tf.constant(i, tf.uint8)))
        .numpy())
  (folder / "005.png").write_bytes(b"not a png at all" * 10)
  line = assert_one_line_error(
      _train(tmp_path / "m", f"--data_dir={folder}",
             "--batch_size=4"),
      f"{folder}/005.png", "not a readable image")
  assert "{{" not in line and "function_node" not in line
  assert "[Op:" not in line and "/job:" not in line
  _report("an undecodable image", line)


def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(12):
    (folder / f"{i:03d}.png").write_bytes(
        tf.io.encode_png(tf.zeros([8, 8, 1], tf.uint8)).numpy())
  (folder / "bad\nname.png").write_bytes(b"garbage")
  result = _train(tmp_path / "m", f"--data_dir={folder}",
                  "--batch_size=4")
  line = assert_one_line_error(result, "bad\\nname.png")
  assert result.stderr.count("\n") == result.stderr.count("error:") or (
      "bad\nname" not in result.stderr)
  _report("a file name with a newline", line)


def test_another_reconstruction_loss_names_the_flag(tmp_path,
                                                    small_mnist_dir):
  first = _train(tmp_path / "m", f"--data_dir={small_mnist_dir}")
  assert first.returncode == 0, first.stderr
  line = assert_one_line_error(
      _train(tmp_path / "m", f"--data_dir={small_mnist_dir}",
             "--reconstruction_loss=discretized_logistic",
             "--train_steps=20"),
      "--model_dir", "--reconstruction_loss=bernoulli there",
      "discretized_logistic here", "--init_from")
  assert "not bound" not in line
  _report("same model, another --reconstruction_loss", line)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_learning_rates_that_are_not_finite(value):
  line = assert_one_line_error(run_in_process(f"--learning_rate={value}"),
                               "--learning_rate", "finite")
  _report(f"--learning_rate={value}", line)


def test_an_empty_x_train_names_the_data_not_the_batch(tmp_path):
  data = _npz(tmp_path / "data.npz", x_train=np.zeros((0, 8, 8), np.uint8),
              x_test=_images(8))
  line = assert_one_line_error(
      _train(tmp_path / "m", f"--data_dir={data}"),
      f"--data_dir={data}", "x_train holds no images")
  assert "--batch_size" not in line
  _report("empty x_train", line)


def test_a_garbage_checkpoint_state_file_is_named_and_ignored(
    tmp_path, small_mnist_dir):
  first = _train(tmp_path / "m", f"--data_dir={small_mnist_dir}")
  assert first.returncode == 0, first.stderr
  (tmp_path / "m" / "checkpoint").write_bytes(b"\x00garbage{{{")
  again = _train(tmp_path / "m", f"--data_dir={small_mnist_dir}",
                 "--train_steps=20")
  assert again.returncode == 0, again.stderr
  assert "checkpoint state file" in again.stderr
  assert f"{tmp_path}/m/checkpoint" in again.stderr
  assert "deprecated" not in again.stderr
  assert "resumed from" in again.stdout
  assert tf.train.latest_checkpoint(str(tmp_path / "m")).endswith("ckpt-20")
  _report("a garbage checkpoint state file",
          [line for line in again.stderr.splitlines()
           if "state file" in line][0][-110:])


def test_raw_and_gz_copies_of_an_idx_file(tmp_path, data_copy):
  """Equal copies are fine; copies that differ are refused."""
  import gzip
  raw = data_copy / "t10k-labels-idx1-ubyte"
  with gzip.open(data_copy / "t10k-labels-idx1-ubyte.gz", "rb") as f:
    raw.write_bytes(f.read())
  equal = _train(tmp_path / "a", f"--data_dir={data_copy}")
  assert equal.returncode == 0, equal.stderr
  write_idx(str(raw), np.zeros(512, np.uint8))
  line = assert_one_line_error(
      _train(tmp_path / "b", f"--data_dir={data_copy}"),
      "t10k-labels-idx1-ubyte and t10k-labels-idx1-ubyte.gz", "differ")
  _report("raw and .gz IDX copies that differ", line)


def test_the_start_line_gives_the_number_of_classes(tmp_path,
                                                    small_mnist_dir):
  result = _train(tmp_path / "m", f"--data_dir={small_mnist_dir}")
  assert result.returncode == 0, result.stderr
  assert "2048 train / 512 test images (10 classes)" in result.stdout
