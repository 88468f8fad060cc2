"""The command line's own rules: a flag given twice is refused, the command
line wins over a flagfile or preset wherever it stands, and values that
flags.txt could not replay are refused."""

import json

import pytest

from tests.helpers import assert_one_line_error
from tests.helpers import run_in_process

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("args,culprit", [
    (["--train_steps=30", "--train_steps=20"],
     "--train_steps: given twice on the command line (--train_steps=30, "
     "then --train_steps=20)"),
    (["--batch_size", "64", "--batch_size=3"],
     "--batch_size: given twice on the command line"),
    (["--nofigures", "--figures"],
     "--figures: given twice on the command line (--nofigures, then "
     "--figures)"),
])
def test_a_flag_given_twice_is_refused(args, culprit):
  assert_one_line_error(run_in_process(*args, as_given=True), culprit,
                        "give it once")


def test_the_command_line_wins_over_a_preset_wherever_it_stands(
    small_mnist_dir, tmp_path):
  result = run_in_process("--batch_size=64", "--preset=iwae_vae",
                          f"--data_dir={small_mnist_dir}", "--train_steps=2",
                          "--steps_per_loop=1", "--nofigures", "--eval_every=0",
                          "--log_every=1",
                          f"--model_dir={tmp_path}", "--nojit_compile")
  assert result.returncode == 0, result.stderr[-2000:]
  assert ("note: the command line's flags win over the flagfile's: "
          "--batch_size=64 over --batch_size=20") in result.stderr
  assert json.loads((tmp_path / "config.json").read_text())["train"][
      "batch_size"] == 64


def test_a_newline_in_a_path_is_refused(tmp_path):
  error = assert_one_line_error(
      run_in_process(f"--model_dir={tmp_path}/a\nb"), "--model_dir",
      "must not hold a newline", "flags.txt")
  assert "\\n" in error


@pytest.mark.parametrize("flag", ["model_dir", "export_dir"])
def test_a_path_too_long_for_the_run_is_refused_before_training(
    small_mnist_dir, tmp_path, flag):
  # Under PATH_MAX itself, but not with the files the run writes below it.
  deep = str(tmp_path / "/".join(["d" * 200] * 19))
  deep += "/" + "e" * (4050 - len(deep))
  args = {"model_dir": str(tmp_path / "run"), "export_dir": None, flag: deep}
  result = run_in_process(f"--data_dir={small_mnist_dir}", "--model=dense",
                          "--train_steps=5", "--nofigures",
                          *[f"--{k}={v}" for k, v in args.items() if v])
  assert_one_line_error(result, f"--{flag}: ", "bytes long, and the run writes files",
                        "over the file system's limit",
                        f"pass a shorter --{flag}")
  assert "step " not in result.stdout  # Refused before training.
