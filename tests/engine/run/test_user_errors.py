"""Bad input, one case each, as a user meets it on the command line: a
one-line `error:` naming the culprit, a non-zero exit, no traceback, and
nothing lost. (More cases: test_main.py (unknown flag, missing flagfile),
test_distribute.py (batch vs replicas), data/test_idx.py; in-process, with
the same message the CLI prints: run/test_runner.py (unwritable --model_dir),
io/test_checkpoints.py (no readable checkpoint).)"""

import functools
import io
import struct

import numpy as np
import pytest
import tensorflow as tf

from engine.run import runner
from engine.errors import UserError
from tests.helpers import write_idx
from tests.helpers import assert_one_line_error
from tests.helpers import run_in_process
from tests import helpers

pytestmark = pytest.mark.e2e

_config = functools.partial(helpers.run_config, **helpers.SHORT_RUN)


def _run(data_dir, model_dir, *flags):
  """The engine on small settings; `flags` replace the defaults they name
  (a flag may be given once on the command line)."""
  named = {flag.split("=", 1)[0] for flag in flags}
  defaults = [flag for flag in ("--model=dense", "--train_steps=4",
                                "--batch_size=32", "--nofigures")
              if flag.split("=", 1)[0] not in named]
  return run_in_process(f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                        *defaults, *flags)


def _report(case, line):
  # `pytest -s -k bad_inputs` prints the table for the closing note.
  print(f"\nBAD-INPUT | {case} | {line}")


def test_image_and_label_counts_differ(tmp_path, data_copy):
  write_idx(str(data_copy / "train-labels-idx1-ubyte.gz"),
            np.zeros(2000, np.uint8))
  line = assert_one_line_error(_run(data_copy, tmp_path / "m"),
                               "train-images-idx3-ubyte.gz", "2048 images",
                               "2000 labels")
  _report("image/label counts differ", line)


def test_header_claiming_a_billion_images(tmp_path, data_copy):
  path = data_copy / "t10k-images-idx3-ubyte"
  (data_copy / "t10k-images-idx3-ubyte.gz").unlink()
  path.write_bytes(struct.pack(">IIII", 0x803, 10 ** 9, 28, 28)
                   + bytes(28 * 28 * 3))
  result = _run(data_copy, tmp_path / "m")
  line = assert_one_line_error(result, "t10k-images-idx3-ubyte",
                               "1000000000")
  _report("header claims 10^9 images", line)


def test_images_that_are_not_28x28_for_the_conv_model(tmp_path, data_copy):
  for split, count in (("train", 2048), ("t10k", 512)):
    write_idx(str(data_copy / f"{split}-images-idx3-ubyte.gz"),
              np.zeros((count, 30, 30), np.uint8))
  line = assert_one_line_error(
      _run(data_copy, tmp_path / "m", "--model=conv"), "--model=conv",
      "(30, 30, 1)")
  _report("30x30 images for --model=conv", line)


def test_model_dir_that_is_a_file(data_copy, tmp_path):
  (tmp_path / "file").write_text("x")
  line = assert_one_line_error(_run(data_copy, tmp_path / "file"),
                               "--model_dir", "not writable")
  _report("--model_dir is a file", line)


def test_float16_on_a_cpu_without_allow_slow(data_copy, tmp_path):
  line = assert_one_line_error(
      _run(data_copy, tmp_path / "m", "--mixed_precision=mixed_float16"),
      "--mixed_precision=mixed_float16", "--allow_slow", "mixed_bfloat16")
  _report("mixed_float16 without a GPU", line)


def test_iwae_objective_with_warmup(data_copy, tmp_path):
  line = assert_one_line_error(
      _run(data_copy, tmp_path / "m", "--objective=iwae",
           "--kl_warmup_steps=100"), "--objective=iwae", "--kl_warmup_steps")
  _report("--objective=iwae with --kl_warmup_steps", line)


def test_disk_full_while_checkpointing_keeps_the_previous_one(
    small_mnist_dir, tmp_path, monkeypatch):
  runner.run(_config(small_mnist_dir, tmp_path, train_steps=20),
             stream=io.StringIO())

  def no_space(self, checkpoint_number=None, **kwargs):
    raise tf.errors.ResourceExhaustedError(None, None,
                                           "No space left on device")

  monkeypatch.setattr(tf.train.CheckpointManager, "save", no_space)
  with pytest.raises(UserError) as error:
    runner.run(_config(small_mnist_dir, tmp_path, train_steps=40),
               stream=io.StringIO())
  message = str(error.value)
  for fragment in ("--model_dir", "could not write checkpoint ckpt-40",
                   "No space left", "ckpt-20, is intact"):
    assert fragment in message, message
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-20")
  _report("disk full during a checkpoint (simulated)", message)
