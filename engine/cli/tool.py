"""What every tool shares: a quiet TensorFlow, one error path.

A tool's flags are parsed as the engine's are (`flags.parse`: a bad flag is
one `error:` line and exit 2, not absl's usage text), its `UserError`s end
the same way, and TensorFlow's chatter is held back unless --verbosity is
given.
"""

import sys

from engine import startup

# TensorFlow's import without its start-up chatter (--verbosity shows it).
_HELD_BACK = startup.import_tensorflow_quietly()


def run_tool(main) -> None:
  """Runs `main(argv)` under absl, turning `UserError` into one line + exit 2
  (the tool's docstring is its usage text)."""
  startup.describe_main(sys.modules[main.__module__].__doc__)
  from absl import app

  import flags as engine_flags
  from engine.errors import UserError, fail

  def guarded(argv):
    from absl import flags
    startup.quiet_logs(flags.FLAGS["verbosity"].present, _HELD_BACK)
    try:
      status = main(argv)
    except UserError as e:
      fail(str(e))
    sys.exit(status or 0)

  app.run(guarded, flags_parser=engine_flags.parse)
