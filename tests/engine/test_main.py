"""The command line, as a user runs it: one-line errors, real runs."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, write_idx


def last_wins(*args):
  """Flags where a later one replaces an earlier one of the same name (the
  tests' defaults then their overrides): the engine refuses a flag given
  twice on its command line."""
  def name(arg):
    flag = arg.lstrip("-").split("=", 1)[0]
    return flag[2:] if flag.startswith("no") else flag
  kept = {}
  for arg in args:
    key = name(arg) if arg.startswith("--") and arg != "--" else id(arg)
    kept.pop(key, None)
    kept[key] = arg
  return list(kept.values())


def run_cli(*args, timeout=600, env=None, as_given=False):
  """The engine's command line; a flag repeated in `args` is given once,
  its last value (see `last_wins`), unless `as_given`."""
  args = args if as_given else last_wins(*args)
  env = dict(env if env is not None else os.environ, PYTHONPATH=REPO_ROOT)
  return subprocess.run([sys.executable, "-m", "engine.main", *args],
                        capture_output=True, text=True, cwd=REPO_ROOT,
                        env=env, timeout=timeout, check=False)


def assert_one_line_error(result, *fragments):
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines()
            if line.startswith(("error:", "FATAL"))]
  assert len(errors) == 1, result.stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


def test_unknown_model():
  assert_one_line_error(run_cli("--model=resnet"), "--model=resnet",
                        "one of conv, denoising, dense, iwae_mlp, iwae_mlp2, "
                        "lambda, mlp, or a builder as package.module:function")


@pytest.mark.parametrize("flag,name", [("--batch_size=0", "--batch_size"),
                                       ("--batch_size=-3", "--batch_size"),
                                       ("--latent_dim=0", "--latent_dim"),
                                       ("--steps_per_loop=0",
                                        "--steps_per_loop")])
def test_non_positive_numbers(flag, name):
  assert_one_line_error(run_cli(flag), name, "must be a positive number")


def test_missing_data_dir(tmp_path):
  assert_one_line_error(run_cli(f"--data_dir={tmp_path}/nope"), "--data_dir",
                        "not an existing directory")


def test_unknown_flag():
  assert_one_line_error(run_cli("--no_such_flag=1"), "no_such_flag")


def test_missing_flagfile(tmp_path):
  assert_one_line_error(run_cli(f"--flagfile={tmp_path}/missing.txt"),
                        "--flagfile", "missing.txt")


def test_truncated_idx_file(tmp_path, data_copy):
  path = data_copy / "t10k-images-idx3-ubyte.gz"
  write_idx(str(path), np.zeros((512, 28, 28), np.uint8))
  raw = path.read_bytes()
  path.write_bytes(raw[:len(raw) // 2])
  assert_one_line_error(run_cli(f"--data_dir={data_copy}",
                                f"--model_dir={tmp_path}/m"),
                        "t10k-images-idx3-ubyte.gz")


def test_wrong_magic_idx_file(tmp_path, data_copy):
  write_idx(str(data_copy / "train-labels-idx1-ubyte.gz"),
            np.zeros(2048, np.uint8), magic=0x00000901)
  assert_one_line_error(run_cli(f"--data_dir={data_copy}",
                                f"--model_dir={tmp_path}/m"),
                        "train-labels-idx1-ubyte.gz", "0x00000901")


def test_model_dir_of_another_model(tmp_path, small_mnist_dir):
  common = [f"--data_dir={small_mnist_dir}", f"--model_dir={tmp_path}/m",
            "--train_steps=3", "--batch_size=32", "--nofigures"]
  first = run_cli("--model=dense", *common)
  assert first.returncode == 0, first.stderr
  assert_one_line_error(run_cli("--model=conv", *common), "--model_dir",
                        "holds a run trained with other settings",
                        "--model=dense there, conv here")


def test_flagfile_and_resume_from_the_command_line(tmp_path, small_mnist_dir):
  flagfile = tmp_path / "run.flags"
  flagfile.write_text(f"--model=dense\n--data_dir={small_mnist_dir}\n"
                      f"--model_dir={tmp_path}/m\n--batch_size=32\n"
                      "--log_every=5\n--nofigures\n")
  first = run_cli(f"--flagfile={flagfile}", "--train_steps=10")
  assert first.returncode == 0, first.stderr
  assert "step 10/10" in first.stdout and "test ELBO" in first.stdout
  second = run_cli(f"--flagfile={flagfile}", "--train_steps=15")
  assert second.returncode == 0, second.stderr
  assert "resumed from" in second.stdout and "ckpt-10" in second.stdout
  assert "step 15/15" in second.stdout
  # The written flagfile reproduces the run.
  saved = (tmp_path / "m" / "flags.txt").read_text()
  assert "--train_steps=15" in saved and "--model=dense" in saved


def test_helpfull_documents_the_flags():
  result = run_cli("--helpfull")
  assert "Usage: python -m engine.main" in result.stdout
  for flag in ("--model", "--dataset", "--data_dir", "--model_dir",
               "--latent_dim", "--batch_size", "--epochs", "--train_steps",
               "--steps_per_loop", "--learning_rate", "--seed",
               "--reconstruction_loss", "--binarize", "--noise_factor",
               "--beta", "--eval_every", "--checkpoint_every", "--log_every",
               "--keep_checkpoints", "--export_dir", "--strategy",
               "--mixed_precision"):
    assert flag + ":" in result.stdout, flag


@pytest.mark.slow
def test_acceptance_conv_one_epoch(tmp_path, mnist_dir):
  """The issue's acceptance command, on all of MNIST."""
  result = run_cli("--model=conv", "--dataset=mnist",
                   f"--data_dir={mnist_dir}", "--epochs=1",
                   f"--model_dir={tmp_path}/m", f"--export_dir={tmp_path}/e")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "test ELBO" in result.stdout
  model_dir = tmp_path / "m"
  assert (model_dir / "ckpt-468.index").exists()
  assert os.listdir(model_dir / "train") and os.listdir(model_dir / "eval")
  assert len(os.listdir(model_dir / "figures")) >= 5
  assert (tmp_path / "e" / "468" / "saved_model.pb").exists()
