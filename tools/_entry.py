"""What every tool shares: import path, quiet TensorFlow, one-line errors."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine import startup  # noqa: E402

# TensorFlow's import without its start-up chatter (--verbosity shows it).
_HELD_BACK = startup.import_tensorflow_quietly()


def run_tool(main) -> None:
  """Runs `main(argv)` under absl, turning `UserError` into one line + exit 2."""
  from absl import app

  from engine.errors import UserError

  def guarded(argv):
    from absl import flags
    if flags.FLAGS["verbosity"].present:
      startup.show(_HELD_BACK)
    try:
      main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)

  app.run(guarded)
