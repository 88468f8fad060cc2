"""Trains a VAE with vae-engine's compiled custom loop.

Usage: python -m engine.main --model=conv --data_dir=DIR --model_dir=DIR
       (or `vae-engine ...`; `--flagfile=FILE` reads flags from a file).
Re-running the same command resumes from the latest checkpoint in
--model_dir. Bad input ends with a one-line `error: ...` and exit status 2; a
non-finite loss (--nan_policy) with exit status 3; a failed peer with 1;
SIGTERM with a checkpoint and 143.
"""

# This module is the only reader of the engine's flags: it turns them into a
# frozen RunConfig and hands that to engine.runner.run.

from __future__ import annotations

import logging
import sys
import warnings

# First: TensorFlow's import, without the start-up chatter that would bury
# the engine's first line (--verbosity shows it).
from engine import startup  # noqa: I001

_HELD_BACK = startup.import_tensorflow_quietly()

from absl import app  # noqa: E402
from absl import flags as absl_flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

import flags  # noqa: E402

FLAGS = absl_flags.FLAGS
EXIT_USAGE = 2
EXIT_CLUSTER_FAILURE = 1
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a scheduler expects.


def fail(message: str) -> None:
  """Prints a one-line error and exits with status 2."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(EXIT_USAGE)


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags, turning absl's errors into one line (missing flagfile too)."""
  try:
    return FLAGS(argv)
  except absl_flags.CantOpenFlagFileError as e:
    fail(f"--flagfile: cannot open it ({str(e).split(': ', 1)[-1]})")
  except absl_flags.Error as e:
    fail(str(e).strip().splitlines()[0])
  except OSError as e:  # --flagfile that cannot be read.
    fail(f"--flagfile: {e.strerror or e}: {e.filename}")
  return []


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fail(f"unexpected arguments: {' '.join(argv[1:])}")
  # absl's app.run sets INFO itself, so an explicit flag is looked for.
  verbose = FLAGS["verbosity"].present
  if verbose:
    startup.show(_HELD_BACK)
  from engine import runner  # noqa: E402  (imports TensorFlow; after parsing)
  # TensorFlow logs routine saver/exporter details at INFO through Python
  # logging; the progress lines are what a user reads. --verbosity=0 (absl's
  # flag) brings them back.
  if not verbose:
    # tf.distribute reads a dataset's options while tracing, and tf.data
    # warns about that on every evaluation; nothing a user can act on.
    warnings.filterwarnings("ignore", category=UserWarning,
                            message="To make it possible to preserve tf.data")
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
  from engine.errors import TrainingDiverged, UserError  # noqa: E402

  import tensorflow as tf  # noqa: E402  (already imported by the runner)

  config = flags.to_config(FLAGS)
  try:
    runner.run(config)
  except UserError as e:
    fail(str(e))
  except TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(EXIT_DIVERGED)
  except runner.Preempted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
          tf.errors.AbortedError, tf.errors.CancelledError) as e:
    # A peer died or stopped answering: end now so the job can be restarted
    # from its last checkpoint, instead of hanging on a collective.
    reason = " ".join(str(e).split())[:300]
    print(f"error: training stopped: a worker failed or became unreachable "
          f"({type(e).__name__}: {reason}); restart the job to resume from "
          "the last checkpoint", file=sys.stderr, flush=True)
    sys.exit(EXIT_CLUSTER_FAILURE)


def run() -> None:
  """Console-script entry point."""
  flags.define()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
