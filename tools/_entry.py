"""What every tool shares: import path, quiet TensorFlow, one-line errors."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_tool(main) -> None:
  """Runs `main(argv)` under absl, turning `UserError` into one line + exit 2."""
  from absl import app

  from engine.errors import UserError

  def guarded(argv):
    try:
      main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr, flush=True)
      sys.exit(2)

  app.run(guarded)
