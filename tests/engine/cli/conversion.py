"""`vae-engine convert_dataset` run in this process, for the tests that call
it per example (its tests and its fuzz tier)."""

import contextlib
import io


def convert_in_process(*argv):
  """What `vae-engine convert_dataset argv` does, in this process: (exit
  status, stdout, stderr), with the tool's own flag parsing and error path
  (`tool.run_tool`: a UserError is one `error:` line and exit 2)."""
  from absl import flags as absl_flags

  import flags
  from engine.cli import convert_dataset
  from engine.errors import UserError, fail

  fv = absl_flags.FlagValues()
  convert_dataset.define_flags(fv)
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      flags.parse(["convert_dataset", *argv], fv)
      try:
        convert_dataset.convert(fv)
      except UserError as e:
        fail(str(e))
    except SystemExit as e:
      return e.code, out.getvalue(), err.getvalue()
  return 0, out.getvalue(), err.getvalue()


def error_line(status, stderr):
  """The one `error:` line of a refused conversion (exit 2)."""
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert status == 2 and len(lines) == 1, (status, stderr)
  assert "Traceback" not in stderr
  return lines[0]
