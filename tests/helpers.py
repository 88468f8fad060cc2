"""Helpers every test layer shares: the repository's paths, data written
as users have it, the command line and tools run as users run them, and
the one config factory of in-process runs.

Heavy imports (TensorFlow, the engine) happen inside the helpers that need
them, so a module importing this one pays only for what it uses.
"""

import atexit
import functools
import gzip
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.environ.get(
    "VAE_ENGINE_MNIST_DIR",
    os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "mnist"))


def write_idx(path, array, magic=None):
  """Writes a uint8 array as an IDX file (gzip if the name ends in .gz)."""
  array = np.asarray(array, dtype=np.uint8)
  if magic is None:
    magic = 0x00000800 | array.ndim
  header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I",
                                                   *array.shape)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(header + array.tobytes())
  return path


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


def run_cli(*args, timeout=600, env=None, as_given=False, cwd=None):
  """The engine's command line; a flag repeated in `args` is given once,
  its last value (see `last_wins`), unless `as_given`. It runs in `cwd`,
  by default a scratch directory of this process: never the clone, where
  a run without --model_dir would write runs/<model>_<data>."""
  args = args if as_given else last_wins(*args)
  env = dict(env if env is not None else os.environ, PYTHONPATH=REPO_ROOT)
  return subprocess.run([sys.executable, "-m", "engine.main", *args],
                        capture_output=True, text=True,
                        cwd=cwd or _scratch_directory(), env=env,
                        timeout=timeout, check=False)


def run_in_process(*args, as_given=False, cwd=None):
  """What `run_cli(*args)` does when it trains (no tool, no help), run in
  this process: the engine's own flag parsing (`flags.parse`, whose
  refusals are one `error:` line and exit 2) and `engine.main.train`, which
  ends a run as the command does. For the tests whose property is the
  engine's answer, not the process around it: a start costs a TensorFlow
  import; signals, start-up output and the environment need `run_cli`.

  Returns:
    A `subprocess.CompletedProcess` as `run_cli`'s: its return code, and
    what the engine wrote to stdout and stderr (Python's streams; what
    TensorFlow's C++ writes to the process's descriptors is not in it).
  """
  # pylint: disable=g-import-not-at-top
  from absl import flags as absl_flags

  import flags
  from engine import main
  # pylint: enable=g-import-not-at-top

  args = [str(arg) for arg in (args if as_given else last_wins(*args))]
  assert not (args and args[0] in main.TOOLS), "a tool: run_tool_in_process"
  fv = absl_flags.FlagValues()
  flags.define(fv)

  def command():
    rest = flags.parse(["engine.main", *args], fv)
    if len(rest) > 1:
      main.fail(f"unexpected arguments: {' '.join(rest[1:])}")
    main.train(fv, own_the_process=False)

  return _in_process(["engine.main", *args], command, cwd)


def run_tool_in_process(name, *args, as_given=False, cwd=None):
  """What `run_cli(name, *args)` does for the tool `name`, run in this
  process as `run_in_process` runs the engine: the tool's flags defined on
  a FlagValues of their own (its `define_flags(fv)`; a tool without one
  cannot run here), parsed as the command parses them, its `main` called,
  and a `UserError` its one `error:` line and exit 2.

  Not for what needs a process: devices laid out before TensorFlow starts
  (--cpu_devices), the process's peak memory, signals, absl's own flags
  (--help, --verbosity: not defined here), output of the tool's child
  processes or of TensorFlow's C++ (the process's descriptors, which this
  does not capture: a `FATAL` there is not in the result).
  """
  # pylint: disable=g-import-not-at-top
  import importlib

  from absl import flags as absl_flags

  import flags
  from engine.cli import tool as tool_lib
  # pylint: enable=g-import-not-at-top

  tool = importlib.import_module(f"engine.cli.{name}")
  args = [str(arg) for arg in (args if as_given else last_wins(*args))]
  fv = absl_flags.FlagValues()
  tool.define_flags(fv)

  def command():
    rest = flags.parse([f"vae-engine {name}", *args], fv)
    global_flags, tool.FLAGS = tool.FLAGS, fv  # What `main` reads.
    try:
      tool_lib.answer(tool.main, rest)  # The command's own error path.
    finally:
      tool.FLAGS = global_flags

  return _in_process([f"vae-engine {name}", *args], command, cwd)


def _in_process(argv, command, cwd):
  """Runs `command()` in `cwd` (by default this process's scratch
  directory) with stdout, stderr and absl's warnings captured; its
  `SystemExit` is the return code."""
  # pylint: disable=g-import-not-at-top
  import contextlib
  import io
  import logging

  from absl import logging as absl_logging
  # pylint: enable=g-import-not-at-top

  out, err = io.StringIO(), io.StringIO()
  status = 0
  # The engine's warnings (absl logging), on stderr as the command has them.
  warnings = logging.StreamHandler(err)
  warnings.setLevel(logging.WARNING)
  warnings.setFormatter(absl_logging.PythonFormatter())
  absl_logger = logging.getLogger("absl")
  absl_logger.addHandler(warnings)
  with contextlib.chdir(cwd or _scratch_directory()), \
      contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      command()
    except SystemExit as e:
      status = e.code if isinstance(e.code, int) else 1
    finally:
      absl_logger.removeHandler(warnings)
  return subprocess.CompletedProcess(argv, status, out.getvalue(),
                                     err.getvalue())


@functools.cache
def _scratch_directory() -> str:
  directory = tempfile.mkdtemp(prefix="vae-engine-tests-")
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  return directory


def assert_one_line_error(result, *fragments):
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr
  errors = [line for line in result.stderr.splitlines()
            if line.startswith(("error:", "FATAL"))]
  assert len(errors) == 1, result.stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  return errors[0]


def run_tool(name, *args):
  """`tools/<name>` of this clone, run as `run_cli` runs the engine."""
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools",
                                                      name), *args],
                        capture_output=True, text=True,
                        cwd=_scratch_directory(), check=False)


# A short in-process run: 40 steps of 64 images in calls of 7, a checkpoint
# every 20 (`run_config(..., **SHORT_RUN)`).
SHORT_RUN = dict(batch_size=64, train_steps=40, steps_per_loop=7, log_every=10,
                 checkpoint_every=20, eval_every=0)


def run_config(data_dir, model_dir, model="dense", *, data=None,
               model_options=None, **train):
  """The `RunConfig` of an in-process run on `data_dir` into `model_dir`:
  `model` with its default latent size and noise (as the command line
  resolves them), no figures, and `data`, `model_options` and `train`
  overriding the config's defaults section by section."""
  import models  # pylint: disable=g-import-not-at-top
  from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
  spec = models.get(model)
  return RunConfig(
      data=DataConfig(**{"data_dir": data_dir and str(data_dir),
                         "noise_factor": spec.default_noise_factor,
                         **(data or {})}),
      model=ModelConfig(**{"name": model,
                           "latent_dim": spec.default_latent_dim,
                           **(model_options or {})}),
      train=TrainConfig(**{"model_dir": str(model_dir), "figures": False,
                           **train}))


def checkpointed_state(model_dir):
  """Every tensor of the latest checkpoint: weights, Adam slots, step."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(model_dir)
  return {name: reader.get_tensor(name)
          for name in sorted(reader.get_variable_to_shape_map())
          if not name.startswith(("save_counter", "_CHECKPOINTABLE"))}


class Killed(Exception):
  """What the action `kill_at` returns raises."""


def kill_at(step):
  """An action that ends a run as a kill would, at `step` (after the
  checkpoint before it: the controller saves after its actions); it raises
  `Killed`."""
  from engine.train import controller  # pylint: disable=g-import-not-at-top

  class KillAt(controller.Action):

    def __call__(self, outputs):
      if outputs.step >= step:
        raise Killed()

  return KillAt()


def photo_patches(directory, size=32):
  """32x32x3 patches cut from the photographs matplotlib ships."""
  import matplotlib.cbook  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  count = 0
  for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png"):
    with matplotlib.cbook.get_sample_data(name) as f:
      image = tf.io.decode_image(f.read(), channels=3,
                                 expand_animations=False).numpy()
    for top in range(0, image.shape[0] - size + 1, size):
      for left in range(0, image.shape[1] - size + 1, size):
        tf.io.write_file(os.path.join(directory, f"{count:05d}.png"),
                         tf.io.encode_png(image[top:top + size,
                                                left:left + size]))
        count += 1
  return count


def write_png_folder(directory, mnist, train=2048, test=512):
  """Real MNIST as numbered PNGs in train/ and test/ class sub-folders."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for split, array, labels, count in (
      ("train", mnist.train_images, mnist.train_labels, train),
      ("test", mnist.test_images, mnist.test_labels, test)):
    for i in range(count):
      folder = os.path.join(directory, split, str(labels[i]))
      os.makedirs(folder, exist_ok=True)
      tf.io.write_file(os.path.join(folder, f"{i:06d}.png"),
                       tf.io.encode_png(array[i]))
  return str(directory)


def flag_groups(text):
  """Heading -> the flags listed under it (`--helpfull`'s layout)."""
  groups, current = {}, None
  for line in text.splitlines():
    heading = re.match(r"^(\w[\w -]*):( |$)", line)
    if heading:
      current = groups.setdefault(heading.group(1), [])
    flag = re.match(r"^  (?:-\S,)*--(?:\[no\])?(\w+):", line)
    if flag and current is not None:
      current.append(flag.group(1))
  return {name: listed for name, listed in groups.items() if listed}
