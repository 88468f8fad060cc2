"""What every tool shares: a quiet TensorFlow, one error path, its help.

A tool's flags are parsed as the engine's are (`flags.parse`: a bad flag is
one `error:` line and exit 2, not absl's usage text), its `UserError`s end
the same way, and TensorFlow's chatter is held back unless --verbosity is
given. `--help` prints its docstring and its own flags, `--helpfull` every
flag it takes (`flags.usage`), both with exit status 0.
"""

import sys

from engine import startup

# TensorFlow's import without its start-up chatter (--verbosity shows it).
_HELD_BACK = startup.import_tensorflow_quietly()


def run_tool(main) -> None:
  """Runs `main(argv)` under absl, turning `UserError` into one line + exit 2
  (the tool's docstring is its usage text)."""
  module = sys.modules[main.__module__]
  startup.describe_main(module.__doc__)
  from absl import app
  from absl import flags as absl_flags

  import flags as engine_flags
  from flags import usage

  wanted = usage.requested(sys.argv)
  if wanted:
    # `python -m engine.cli.evaluate` runs the module as `__main__`.
    name = getattr(module.__spec__, "name", None) or main.__module__
    usage.show(wanted, absl_flags.FLAGS, module.__doc__ or "",
               command=f"vae-engine {name.rsplit('.', 1)[-1]}",
               own_modules=(main.__module__,))

  def guarded(argv):
    startup.quiet_logs(absl_flags.FLAGS["verbosity"].present, _HELD_BACK)
    answer(main, argv)

  app.run(guarded, flags_parser=engine_flags.parse)


def answer(main, argv) -> None:
  """Calls `main(argv)` with the flags parsed and exits with its status; a
  `UserError` is its one `error:` line and exit 2."""
  from engine.errors import UserError, fail

  try:
    status = main(argv)
  except UserError as e:
    fail(str(e))
  sys.exit(status or 0)
