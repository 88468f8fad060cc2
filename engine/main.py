"""Usage: python -m engine.main --model=conv --data_dir=D --model_dir=M
       vae-engine --preset=iwae_vae --data_dir=D --model_dir=M
       vae-engine <tool> --help   (tools: evaluate, sample, plot, export,
         chaos, launch_local, benchmark, throughput, device_check,
         profile_summary)

Trains a VAE (`vae-engine` is the same command; `--flagfile=FILE`).
Re-running resumes from the latest checkpoint. The only reader of the
flags: flags -> config -> build -> train -> evaluate -> figures -> export
(`engine.run.runner`). Exit statuses: 2 bad input (one `error:` line), 3
non-finite loss, 1 a failed peer, 143 SIGTERM (checkpoint saved).
"""

from __future__ import annotations

import contextlib
import importlib
import sys

# First: TensorFlow's import, without the start-up chatter that would bury
# the engine's first line (--verbosity shows it).
from engine import startup  # noqa: I001

_HELD_BACK = startup.import_tensorflow_quietly()

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402
import tensorflow as tf  # noqa: E402

import flags  # noqa: E402
from engine.run import runner  # noqa: E402
from engine.errors import TrainingDiverged, UserError, fail  # noqa: E402

FLAGS = absl_flags.FLAGS
EXIT_CLUSTER_FAILURE, EXIT_DIVERGED = 1, 3
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a scheduler expects.
_PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                  tf.errors.AbortedError, tf.errors.CancelledError)


@contextlib.contextmanager
def _exit_statuses():
  """Turns how a run ends into one line and the exit status a scheduler
  expects."""
  try:
    yield
  except UserError as e:
    fail(str(e))
  except TrainingDiverged as e:
    fail(str(e), EXIT_DIVERGED)
  except runner.Preempted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except _PEER_FAILURES as e:
    # A peer died or stopped answering: end now so the job can be restarted
    # from its last checkpoint, instead of hanging on a collective.
    fail(f"training stopped: a worker failed or became unreachable "
         f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); restart "
         "the job to resume from the last checkpoint", EXIT_CLUSTER_FAILURE)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  # absl's app.run sets INFO itself, so an explicit flag is looked for.
  startup.quiet_logs(FLAGS["verbosity"].present, _HELD_BACK)
  config = flags.to_config(FLAGS)
  with _exit_statuses():
    runner.run(config)


# `vae-engine <tool> ...` runs the tool of that name (`engine.cli.<tool>`).
TOOLS = ("evaluate", "sample", "plot", "export", "convert_dataset", "chaos",
         "launch_local",
         "benchmark", "throughput", "device_check", "profile_summary")


def run() -> None:
  """Console-script entry point: training, or a tool by its name."""
  if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
    name = sys.argv.pop(1)
    sys.argv[0] = f"vae-engine {name}"
    importlib.import_module(f"engine.cli.{name}").cli()
    return
  startup.describe_main(__doc__)
  flags.define()
  app.run(main, flags_parser=flags.parse)


if __name__ == "__main__":
  run()
