"""A quiet start: the engine's own first line is the first a user reads."""

import os
import subprocess
import sys

import pytest

from engine import startup
from tests.helpers import REPO_ROOT
from tests.helpers import run_cli

pytestmark = pytest.mark.e2e

_WRITE_AT_FD_LEVEL = r"""
import os, sys
from engine import startup
with startup.filtered_stderr():
  # As TensorFlow's C++ logging does: straight to file descriptor 2.
  os.write(2, b"I0000 00:00 port.cc:153] oneDNN custom operations are on.\n")
  os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit: (303)\n")
  os.write(2, b"a line that is not chatter\n")
  print("and a Python one", file=sys.stderr)
print("after", file=sys.stderr)
"""


def test_filtered_stderr_drops_only_known_chatter():
  result = subprocess.run([sys.executable, "-c", _WRITE_AT_FD_LEVEL],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT),
                          check=True)
  assert result.stderr.splitlines() == ["a line that is not chatter",
                                        "and a Python one", "after"]


def _chatter(lines):
  return [line for line in lines
          if any(text in line for text in startup.STARTUP_CHATTER)]


def test_the_engines_first_line_comes_first_and_verbosity_brings_back_the_rest(
    small_mnist_dir, tmp_path):
  """Whatever this machine's TensorFlow prints at start-up (it differs by
  CPU, GPU and build), none of it precedes the engine's first line unless
  the user asks for it with --verbosity or TF_CPP_MIN_LOG_LEVEL."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  args = ["--model=dense", "--train_steps=2", "--steps_per_loop=1",
          "--batch_size=64", "--nofigures", f"--data_dir={small_mnist_dir}"]
  quiet = run_cli(*args, f"--model_dir={tmp_path}/quiet", env=env)
  assert quiet.returncode == 0, quiet.stderr
  assert quiet.stdout.splitlines()[0].startswith("training dense"), quiet.stdout
  assert _chatter(quiet.stderr.splitlines()) == [], quiet.stderr
  verbose = run_cli(*args, "--verbosity=0", f"--model_dir={tmp_path}/v",
                    env=env)
  by_env = run_cli(*args, f"--model_dir={tmp_path}/env",
                   env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"))
  assert verbose.returncode == 0 and by_env.returncode == 0
  # Held back, not lost: --verbosity shows the start-up lines TensorFlow
  # prints at its default level, which TF_CPP_MIN_LOG_LEVEL=0 shows too
  # (with more of its own). A machine whose TensorFlow prints none shows none.
  def messages(result):
    return {line.split("]", 1)[-1] for line in
            _chatter(result.stderr.splitlines())}

  assert messages(verbose) <= messages(by_env)
  assert bool(messages(verbose)) == bool(messages(by_env))
