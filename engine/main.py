"""Usage: vae-engine --model=conv --data_dir=D --model_dir=M
       vae-engine --preset=iwae_vae --data_dir=D --model_dir=M
       vae-engine --list_models   (the models --model can name)
       vae-engine <tool> --help   (a tool's own help; the tools are below)

Trains a VAE into --model_dir: checkpoints, TensorBoard logs, figures,
and with --export_dir a SavedModel. Re-running the same command resumes
from the latest checkpoint. `python -m engine.main` is the same command;
--flagfile=FILE reads flags from a file. Exit status: 0 done; 2 bad input,
with one `error:` line naming the flag or file; 3 training diverged; 1 a
cluster peer failed or never connected (the line names it); 143 stopped by
SIGTERM, after saving a checkpoint (a cluster's others: docs/cluster.md).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import signal
import sys

# Nothing here imports TensorFlow at start: the flags are checked first, so
# a bad one is its `error:` line at once, and TensorFlow is then imported its
# quiet way (`load_tensorflow`), without the start-up chatter that would bury
# the engine's first line (--verbosity shows it).
from engine import startup  # noqa: I001


def _cluster_worker_quietly() -> None:
  """A cluster worker's peer faults are one `error:` line; TensorFlow's C++
  logs each at error level too (collective aborts, gRPC, the coordination
  service), so below FATAL they are off for a worker, unless the user set
  TF_CPP_MIN_LOG_LEVEL or asks for --verbosity. Read before TensorFlow
  starts, hence from the environment and the command line."""
  verbose = any(a.split("=")[0] in ("-v", "--v", "--verbosity", "-verbosity")
                for a in sys.argv[1:])
  if "TF_CONFIG" in os.environ and not startup.USER_SET_LOG_LEVEL and (
      not verbose):
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


_cluster_worker_quietly()

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402

import flags  # noqa: E402
from flags import usage  # noqa: E402
from engine.config import sections  # noqa: E402
from engine.errors import fail  # noqa: E402

FLAGS = absl_flags.FLAGS
EXIT_CLUSTER_FAILURE, EXIT_DIVERGED = 1, 3
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a scheduler expects.
# TensorFlow's start-up lines, held back by `load_tensorflow`.
_held_back: list[str] = []


def load_tensorflow() -> None:
  """Imports TensorFlow (once) with its start-up chatter held back."""
  _held_back.extend(startup.import_tensorflow_quietly())


# A check of --model (or a model's default) needs the registry, which
# imports TensorFlow: quietly, like every other import of it here.
sections.before_registry = load_tensorflow


@contextlib.contextmanager
def _exit_statuses():
  """Turns how a run ends into one line and the exit status a scheduler
  expects."""
  # pylint: disable=g-import-not-at-top  (after TensorFlow's quiet import)
  import tensorflow as tf
  from engine.devices import strategies
  from engine.devices.cluster import ClusterFailure
  from engine.train.actions import Preempted
  from engine.errors import TrainingDiverged, UserError
  peer_failures = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                   tf.errors.AbortedError, tf.errors.CancelledError)
  try:
    yield
  except UserError as e:
    fail(str(e))
  except TrainingDiverged as e:
    fail(str(e), EXIT_DIVERGED)
  except Preempted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except ClusterFailure as e:  # The cluster did not assemble.
    fail(str(e), EXIT_CLUSTER_FAILURE)
  except peer_failures as e:
    # A peer died or stopped answering: end now so the job can be restarted
    # from its last checkpoint, instead of hanging on a collective.
    fail("training stopped: a worker failed or became unreachable: "
         f"{strategies.describe_peer_failure(e)}; restart the job to resume "
         "from the last checkpoint", EXIT_CLUSTER_FAILURE)


def _sigterm_exits_at_once(model_dir: str) -> None:
  """SIGTERM outside the training loop (while the run is built, at the
  final save, evaluation, figures or export) ends the process at once with
  the `preempted` line and 143. Raising from the handler instead would be
  swallowed by library code that catches broadly (AutoGraph, Keras); an
  immediate exit is what a `kill -9` does, which every write survives: a
  half-written save or export is the engine's own temporary file, removed
  by the next run, and the last checkpoint is intact. Inside the loop
  `actions.PreemptionAction` takes the signal over and saves first."""

  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def handle(signum, frame):
    del signum, frame
    try:
      latest = tf.train.latest_checkpoint(model_dir)
    except Exception:  # pylint: disable=broad-except
      latest = None
    kept = (f"the last checkpoint, {latest}, is intact" if latest
            else "no checkpoint had been written")
    sys.stdout.flush()
    print(f"preempted (SIGTERM) before the run finished: {kept}; re-run "
          "the same command to resume", file=sys.stderr, flush=True)
    os._exit(EXIT_PREEMPTED)  # pylint: disable=protected-access

  signal.signal(signal.SIGTERM, handle)


def train(fv: absl_flags.FlagValues, *, own_the_process: bool = True
          ) -> None:
  """Trains the run the parsed flags `fv` describe, ending as the command
  does: a failure is its one `error:` line and exit status (`SystemExit`).

  Args:
    fv: The engine's flags, parsed.
    own_the_process: Whether SIGTERM outside the loop ends the process at
      once (the command's own process; not a caller's, e.g. a test's).
  """
  from engine.run import runner  # pylint: disable=g-import-not-at-top
  with _exit_statuses():
    config = flags.to_config(fv)  # A model without a default latent size.
    if own_the_process:
      _sigterm_exits_at_once(config.train.model_dir)
    runner.run(config)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  load_tensorflow()
  # absl's app.run sets INFO itself, so an explicit flag is looked for.
  startup.quiet_logs(FLAGS["verbosity"].present, _held_back)
  train(FLAGS)


# `vae-engine <tool> ...` runs the tool of that name (`engine.cli.<tool>`).
TOOLS = ("evaluate", "sample", "plot", "export", "convert_dataset", "chaos",
         "launch_local", "reproduce",
         "benchmark", "throughput", "preset_rate", "nll_rate", "device_check",
         "profile_summary")
# What `vae-engine --help` shows of the flags (--helpfull shows them all).
KEY_FLAGS = ("model", "dataset", "data_dir", "model_dir", "epochs",
             "train_steps", "batch_size", "max_train_examples", "strategy",
             "cpu_devices", "mixed_precision", "jit_compile", "init_from",
             "eval_nll_samples", "export_dir", "preset", "flagfile")


def tool_docs() -> dict[str, str]:
  """Each tool's module docstring, read from its source: importing a tool
  would import TensorFlow."""
  docs = {}
  for name in TOOLS:
    with open(importlib.util.find_spec(f"engine.cli.{name}").origin,
              encoding="utf-8") as f:
      docs[name] = ast.get_docstring(ast.parse(f.read())) or ""
  return docs


def list_models() -> None:
  """Prints every model `--model` can name without a reference: the engine's
  and the installed packages' (`vae_engine.models`), with descriptions."""
  load_tensorflow()
  import models  # pylint: disable=g-import-not-at-top  (after TensorFlow)
  from models import plugins  # pylint: disable=g-import-not-at-top
  own = set(models.names())
  described = models.registry.described()
  width = max(len(name) for name, _ in described)
  for name, text in described:
    origin = "engine" if name in own else "installed"
    print(f"{name:<{width}}  {origin:<9}  {text}")
  print(f"\nAny other builder: --model=package.module:function (importable "
        f"from the Python path); packages add theirs in the "
        f"{plugins.ENTRY_POINT_GROUP!r} entry-point group.")


def run() -> None:
  """Console-script entry point: training, a tool by its name, or the list
  of models."""
  if sys.argv[1:] == ["--list_models"]:
    list_models()
    return
  if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
    name = sys.argv.pop(1)
    sys.argv[0] = f"vae-engine {name}"
    importlib.import_module(f"engine.cli.{name}").cli()
    return
  startup.describe_main(__doc__)
  wanted = usage.requested(sys.argv)
  if wanted:
    # The help describes every model, installed ones too: the registry.
    load_tensorflow()
    importlib.import_module("models")
  flags.define()
  if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
    # Not a tool: the engine itself takes no bare words (`vae-engine evalute`).
    fail(usage.unknown_word(sys.argv[1], TOOLS, FLAGS))
  if wanted:
    usage.show(wanted, FLAGS, __doc__, command="vae-engine",
               key_flags=KEY_FLAGS, tools=tool_docs())
  app.run(main, flags_parser=flags.parse)


if __name__ == "__main__":
  run()
