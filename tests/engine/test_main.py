"""The command line, as a user runs it: one-line errors, real runs."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, write_idx
from tests.helpers import flag_groups
from tests.helpers import assert_one_line_error, run_cli, run_in_process

pytestmark = pytest.mark.e2e


def test_bad_flags_are_named_before_tensorflow_loads(tmp_path):
  """A mistake in a flag is its line at once: TensorFlow (seconds to
  import) loads only once the flags are good, or to look a model up."""
  blocker = tmp_path / "tensorflow"
  blocker.mkdir()
  (blocker / "__init__.py").write_text(
      "raise ImportError('TensorFlow was imported')\n")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path),
                                                     REPO_ROOT]))

  def run(*args):
    return subprocess.run([sys.executable, "-m", "engine.main", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          env=env, timeout=120, check=False)

  for args, words in ((["--batch_size=0"], "must be a positive number"),
                      (["--model=conv", "--latent_dim=-2"],
                       "--latent_dim=-2"),
                      ([f"--data_dir={tmp_path}/nope"],
                       "not an existing directory"),
                      (["--mixed_precision=half"], "must be one of"),
                      (["--no_such_flag"], "no_such_flag")):
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, words)
  # The blocker works: a model the engine does not ship is looked up.
  assert "TensorFlow was imported" in run("--model=resnet").stderr


def test_unknown_model():
  assert_one_line_error(run_in_process("--model=resnet"), "--model=resnet",
                        "one of conv, denoising, dense, iwae_mlp, iwae_mlp2, "
                        "lambda, mlp, or a builder as package.module:function")


@pytest.mark.parametrize("flag,name", [("--batch_size=0", "--batch_size"),
                                       ("--batch_size=-3", "--batch_size"),
                                       ("--latent_dim=0", "--latent_dim"),
                                       ("--steps_per_loop=0",
                                        "--steps_per_loop")])
def test_non_positive_numbers(flag, name):
  assert_one_line_error(run_in_process(flag), name, "must be a positive number")


def test_missing_data_dir(tmp_path):
  assert_one_line_error(run_in_process(f"--data_dir={tmp_path}/nope"),
                        "--data_dir", "not an existing directory")


def test_unknown_flag():
  assert_one_line_error(run_in_process("--no_such_flag=1"), "no_such_flag")


def test_missing_flagfile(tmp_path):
  assert_one_line_error(run_in_process(f"--flagfile={tmp_path}/missing.txt"),
                        "--flagfile", "missing.txt")


def test_truncated_idx_file(tmp_path, data_copy):
  path = data_copy / "t10k-images-idx3-ubyte.gz"
  write_idx(str(path), np.zeros((512, 28, 28), np.uint8))
  raw = path.read_bytes()
  path.write_bytes(raw[:len(raw) // 2])
  assert_one_line_error(run_in_process(f"--data_dir={data_copy}",
                                       f"--model_dir={tmp_path}/m"),
                        "t10k-images-idx3-ubyte.gz")


def test_wrong_magic_idx_file(tmp_path, data_copy):
  write_idx(str(data_copy / "train-labels-idx1-ubyte.gz"),
            np.zeros(2048, np.uint8), magic=0x00000901)
  assert_one_line_error(run_in_process(f"--data_dir={data_copy}",
                                       f"--model_dir={tmp_path}/m"),
                        "train-labels-idx1-ubyte.gz", "0x00000901")


def test_model_dir_of_another_model(tmp_path, small_mnist_dir):
  common = [f"--data_dir={small_mnist_dir}", f"--model_dir={tmp_path}/m",
            "--train_steps=3", "--batch_size=32", "--nofigures"]
  first = run_in_process("--model=dense", *common)
  assert first.returncode == 0, first.stderr
  assert_one_line_error(run_in_process("--model=conv", *common), "--model_dir",
                        "holds a run trained with other settings",
                        "--model=dense there, conv here")


def test_mirrored_without_a_gpu_says_it_runs_one_replica(tmp_path,
                                                        small_mnist_dir):
  # XLA's compile is not what this is about (test_distribute runs mirrored
  # with the default). One replica needs no fresh process; two do, to split
  # the CPU before TensorFlow starts.
  common = [f"--data_dir={small_mnist_dir}", "--model=dense",
            "--train_steps=1", "--batch_size=32", "--nofigures",
            "--strategy=mirrored", "--nojit_compile"]
  alone = run_in_process(*common, f"--model_dir={tmp_path}/alone")
  assert alone.returncode == 0, alone.stderr
  assert "1 replica(s)" in alone.stdout
  assert ("note: --strategy=mirrored found no GPU, so one replica on the "
          "CPU; --cpu_devices=N splits the CPU to try mirrored") in (
              alone.stdout)
  split = run_cli(*common, "--cpu_devices=2", f"--model_dir={tmp_path}/two")
  assert split.returncode == 0, split.stderr
  assert "2 replica(s)" in split.stdout and "note:" not in split.stdout


def test_flagfile_and_resume_from_the_command_line(tmp_path, small_mnist_dir):
  flagfile = tmp_path / "run.flags"
  flagfile.write_text(f"--model=dense\n--data_dir={small_mnist_dir}\n"
                      f"--model_dir={tmp_path}/m\n--batch_size=32\n"
                      "--log_every=5\n--nofigures\n")
  first = run_in_process(f"--flagfile={flagfile}", "--train_steps=10")
  assert first.returncode == 0, first.stderr
  assert "step 10/10" in first.stdout and "test ELBO" in first.stdout
  second = run_in_process(f"--flagfile={flagfile}", "--train_steps=15")
  assert second.returncode == 0, second.stderr
  assert "resumed from" in second.stdout and "ckpt-10" in second.stdout
  assert "step 15/15" in second.stdout
  # The written flagfile reproduces the run.
  saved = (tmp_path / "m" / "flags.txt").read_text()
  assert "--train_steps=15" in saved and "--model=dense" in saved


def test_without_model_dir_a_run_goes_under_runs_named_by_model_and_data(
    tmp_path, small_mnist_dir):
  """No shared default: the same command resumes its own directory under
  ./runs (of the directory it runs in), whatever resume-safe flags change,
  named by the model and the data. (Which settings get a directory of their
  own, and the multi-worker refusal: flags/test_settings.py, unit.)"""
  data = os.path.basename(small_mnist_dir)
  common = [f"--data_dir={small_mnist_dir}", "--batch_size=32", "--nofigures"]

  def run(*args):
    result = run_in_process(*common, *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    start = next(line for line in result.stdout.splitlines()
                 if line.startswith("training "))
    return start.rsplit(", into ", 1)[1], result.stdout

  first, _ = run("--model=dense", "--train_steps=2")
  assert first.startswith(str(tmp_path / "runs" / f"dense_{data}"))
  again, stdout = run("--model=dense", "--train_steps=4", "--log_every=1")
  assert again == first and "resumed from" in stdout
  assert os.listdir(tmp_path / "runs") == [os.path.basename(first)]
  assert os.path.exists(os.path.join(first, "ckpt-4.index"))


# The engine's tools (engine.main.TOOLS), which its help must name.
TOOLS = ("evaluate", "sample", "plot", "export", "convert_dataset", "chaos",
         "launch_local", "reproduce", "benchmark", "throughput",
         "preset_rate", "nll_rate", "device_check", "profile_summary")


@pytest.fixture(scope="module")
def helpfull():
  return run_cli("--helpfull")


@pytest.mark.parametrize("option", ["--help", "-h"])
def test_help_is_short_and_names_the_key_flags_and_the_tools(option):
  result = run_cli(option)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("Usage: vae-engine --model=conv")
  assert "Try --helpfull" not in result.stdout
  text = " ".join(result.stdout.split())
  for flag, default in (("model", "'conv'"), ("dataset", "'mnist'"),
                        ("data_dir", None),
                        ("model_dir", None),
                        ("epochs", "'10'"), ("train_steps", None),
                        ("batch_size", "'128'"), ("strategy", "'default'"),
                        ("mixed_precision", "'float32'"),
                        ("jit_compile", None), ("export_dir", None),
                        ("preset", None), ("flagfile", None),
                        ("max_train_examples", None), ("cpu_devices", "'0'"),
                        ("init_from", None), ("eval_nll_samples", "'0'")):
    entry = re.search(rf"^  --(\[no\])?{flag}: .*?(?=^  -|^$)",
                      result.stdout, re.M | re.S)
    assert entry, flag
    if default:
      assert entry.group(0).rstrip().endswith(f"(default: {default})"), (
          entry.group(0))
  assert ("--model_dir: Where the run writes its checkpoints, TensorBoard "
          "logs, figures and config, and resumes from; default: "
          "runs/<model>_<data> in the current directory.") in text
  # What a newcomer missed in the brief entries: every kind of data, the
  # precision choices, what jit_compile does by default.
  for words in ("an .npz file, or shards from vae-engine convert_dataset.",
                "mixed_float16 (loss-scaled; GPUs), or auto (measured at "
                "start-up).",
                "--[no]jit_compile: Compile training with XLA; default: "
                "auto, which is on except for models with convolutions on a "
                "CPU."):
    assert words in text, words
  assert "The only reader of the flags" not in text  # Not the user's business.
  for tool in TOOLS:
    assert re.search(rf"^  {tool} +[A-Z]", result.stdout, re.M), tool
  assert "vae-engine --helpfull lists every flag" in text
  # Short: the key flags only.
  assert "--latent_dim" not in text and "--tpu" not in text
  assert len(result.stdout.splitlines()) < 100


def test_helpfull_documents_the_flags(helpfull):
  result = helpfull
  assert result.returncode == 0, result.stderr
  assert "Usage: vae-engine" in result.stdout
  for flag in ("--model", "--dataset", "--data_dir", "--model_dir",
               "--latent_dim", "--batch_size", "--epochs", "--train_steps",
               "--steps_per_loop", "--learning_rate", "--seed",
               "--reconstruction_loss", "--binarize", "--noise_factor",
               "--beta", "--eval_every", "--checkpoint_every", "--log_every",
               "--keep_checkpoints", "--export_dir", "--strategy",
               "--mixed_precision"):
    assert flag + ":" in result.stdout, flag


def test_helpfull_groups_the_engines_flags_and_leaves_out_foreign_ones(
    helpfull):
  groups = flag_groups(helpfull.stdout)
  assert list(groups) == ["data", "model", "train", "distribution",
                          "general"], list(groups)
  assert {"dataset", "data_dir", "binarize"} <= set(groups["data"])
  assert {"model", "latent_dim", "objective"} <= set(groups["model"])
  assert {"model_dir", "batch_size", "mixed_precision", "jit_compile",
          "export_dir"} <= set(groups["train"])
  assert {"strategy", "cpu_devices"} <= set(groups["distribution"])
  assert groups["general"] == ["flagfile", "preset", "verbosity", "help",
                               "helpfull"]
  assert "  -v,--verbosity:" in helpfull.stdout
  assert "  -?,-h,--help:" in helpfull.stdout
  for foreign in ("tensor_tracer", "tt_check_filter", "delta_threshold",
                  "test_srcdir", "test_tmpdir", "pfor",
                  "op_conversion_fallback_to_while_loop", "hbm_oom_exit",
                  "absl.", "logtostderr", "run_with_pdb", "undefok"):
    assert foreign not in helpfull.stdout, foreign
  assert "tools (vae-engine <tool> --help for one): evaluate" in (
      helpfull.stdout)


@pytest.mark.parametrize("word,suggestion", [("evalute", "evaluate"),
                                             ("expor", "export"),
                                             ("reprodcue", "reproduce")])
def test_a_mistyped_tool_is_one_line_with_the_closest_tool(word, suggestion):
  result = run_cli(word)
  assert result.returncode == 2, result.stderr
  line = assert_one_line_error(result)
  assert line.startswith(f"error: {word}: not a tool or flag; did you mean "
                         f"'{suggestion}'? tools: evaluate, sample, "), line
  assert all(tool in line for tool in TOOLS), line
  assert result.stdout == ""


def test_a_word_close_to_no_tool_still_lists_the_tools():
  result = run_cli("xyzzy", "--model=conv")
  assert result.returncode == 2, result.stderr
  line = assert_one_line_error(result)
  assert line.startswith("error: xyzzy: not a tool or flag; tools: "), line
  assert "did you mean" not in line
  assert all(tool in line for tool in TOOLS), line


def test_a_mistyped_flag_gets_a_suggestion():
  result = run_cli("--modle=conv")
  assert result.returncode == 2
  assert_one_line_error(result, "'modle'", "Did you mean: model")


@pytest.mark.parametrize("tool,example,own_flag", [
    ("evaluate", "    vae-engine evaluate --saved_model=/tmp/iwae/export/30000"
                 " \\\n        --data_dir=path/to/mnist --binarize=dynamic\n",
     "--checkpoint: Checkpoint path"),
    ("chaos", "    vae-engine chaos --kills=12 --work_dir=/tmp/chaos -- \\\n"
              "        --model=dense --data_dir=path/to/mnist",
     "--kills: How many times to SIGKILL the run.")])
def test_a_tools_help_exits_0_with_vae_engine_examples(tool, example,
                                                       own_flag):
  result = run_cli(tool, "--help")
  assert result.returncode == 0, result.stderr
  # Its docstring as written: examples to copy, continuations kept.
  assert example in result.stdout
  assert "python tools/" not in result.stdout
  assert "Try --helpfull" not in result.stdout
  # Then its own flags, with their help.
  assert re.search(r"^flags:\n  --", result.stdout, re.M)
  assert own_flag in result.stdout
  assert f"vae-engine {tool} --helpfull" in " ".join(result.stdout.split())
