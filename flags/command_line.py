"""The command line's own rules, before absl reads it.

* A flag given twice on the command line is refused: which one was meant
  cannot be known (`--train_steps=30 --train_steps=20`).
* A flag given on the command line wins over the same flag in a flagfile
  or a preset, wherever it stands (`--batch_size=64 --preset=iwae_vae`
  trains at 64), and one line says which file value it replaced. Among
  flagfiles, the later one wins, as absl reads them.
"""

from __future__ import annotations

from typing import Callable

from absl import flags

from engine.errors import UserError


def _name(arg: str, fv: flags.FlagValues) -> str | None:
  """The flag an argument sets (`--noX` sets X), or None for a value or a
  flag this program does not know (absl refuses those itself)."""
  if not arg.startswith("-") or arg in ("-", "--"):
    return None
  name = arg.lstrip("-").split("=", 1)[0]
  if name not in fv and name.startswith("no") and name[2:] in fv:
    name = name[2:]
  return name if name in fv else None


def _settings(args: list[str], fv: flags.FlagValues) -> list[tuple[str, str]]:
  """(flag, argument) for each flag argument, skipping separate values
  (`--model_dir DIR`)."""
  found, skip = [], False
  for arg in args:
    if skip:
      skip = False
      continue
    if arg == "--":
      break
    name = _name(arg, fv)
    if name is None:
      continue
    flag = fv[name]
    if "=" not in arg and not isinstance(flag, flags.BooleanFlag) and (
        not arg.lstrip("-").startswith("no")):
      skip = True  # Its value is the next argument.
    found.append((name, arg))
  return found


def arrange(argv: list[str], fv: flags.FlagValues,
            say: Callable[[str], None]) -> list[str]:
  """`argv` with its flagfiles first, so the command line's flags win.

  Args:
    argv: The program name, then its arguments (presets already expanded
      into `--flagfile=`).
    fv: The defined flags.
    say: Where the line about replaced file values goes.

  Returns:
    The arguments in the order absl must read them.
  """
  program, rest = argv[0], argv[1:]
  is_file = [arg.startswith("--flagfile=") for arg in rest]
  files = [arg for arg, file in zip(rest, is_file) if file]
  given = [arg for arg, file in zip(rest, is_file) if not file]
  seen: dict[str, str] = {}
  for name, arg in _settings(given, fv):
    if name in seen and name != "flagfile":
      raise UserError(f"--{name}: given twice on the command line "
                      f"({seen[name]}, then {arg}); give it once")
    seen[name] = arg
  if files:
    from_files = dict(_settings(fv.read_flags_from_files(
        [program, *files], force_gnu=False)[1:], fv))
    replaced = [f"{seen[name]} over {from_files[name]}"
                for name in seen if name in from_files
                and from_files[name] != seen[name]]
    if replaced:
      say("the command line's flags win over the flagfile's: "
          + ", ".join(replaced))
  return [program, *files, *given]
