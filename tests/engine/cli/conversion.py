"""`vae-engine convert_dataset` run in this process, for the tests that call
it per example (its tests and its fuzz tier)."""

from tests.helpers import run_tool_in_process


def convert_in_process(*argv):
  """What `vae-engine convert_dataset argv` does, in this process: (exit
  status, stdout, stderr), with the tool's own flag parsing and error path
  (`run_tool_in_process`: a UserError is one `error:` line and exit 2)."""
  result = run_tool_in_process("convert_dataset", *argv, as_given=True)
  return result.returncode, result.stdout, result.stderr


def error_line(status, stderr):
  """The one `error:` line of a refused conversion (exit 2)."""
  lines = [line for line in stderr.splitlines() if line.startswith("error:")]
  assert status == 2 and len(lines) == 1, (status, stderr)
  assert "Traceback" not in stderr
  return lines[0]
