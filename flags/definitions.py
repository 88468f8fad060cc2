"""The engine's absl flags, derived from the settings `engine.config` declares.

Each setting (type, default, help, allowed values, check) is declared once, in
`engine.config`; this module turns the declarations into absl flags with
parse-time validators, and parsed flags back into a frozen `RunConfig`. Only
`engine.main` and the tools (entry points too) call `define()` and read the
parsed values. Validators raise `absl.flags.ValidationError` with a one-line
message that names the flag.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import os
import re
import sys
from typing import Iterable

from absl import flags

from engine import config as config_lib
from engine.config import settings
from engine.errors import fail, one_line, quoted
from flags import command_line

_defined = False


def presets() -> dict[str, str]:
  """Preset name -> its flagfile, shipped with the package (`presets/`)."""
  folder = importlib.resources.files("flags") / "presets"
  return {entry.name[:-len(".flags")]: str(entry) for entry in
          sorted(folder.iterdir(), key=lambda e: e.name)
          if entry.name.endswith(".flags")}


def define(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines every engine flag on `flag_values` (once) and its validators."""
  global _defined
  if _defined and flag_values is flags.FLAGS:
    return
  flags.DEFINE_string(
      "preset", None, "A flagfile shipped with vae-engine, by name: "
      f"{', '.join(presets())} (read as --flagfile is: a flag given on the "
      "command line wins over the preset's, wherever it stands).",
      flag_values=flag_values)
  for declared in config_lib.all_settings():
    define_setting(declared, flag_values)
  for names, predicate, message in config_lib.CROSS_CHECKS:
    flags.register_multi_flags_validator(list(names), predicate,
                                         message=message,
                                         flag_values=flag_values)
  if flag_values is flags.FLAGS:
    _defined = True


def define_setting(declared: settings.Setting, fv: flags.FlagValues,
                   default=dataclasses.MISSING,
                   help_suffix: str = "") -> None:
  """Defines the flag of one setting (and its check).

  Args:
    declared: The setting.
    fv: Where to define it.
    default: The flag's default (default: the setting's, or None where the
      model decides or the value is a range).
    help_suffix: Appended to the setting's help (a tool's own meaning).
  """
  if default is dataclasses.MISSING:
    default = (None if declared.model_default or declared.type is tuple
               else declared.default)
  name, text = declared.flag, declared.help + help_suffix
  if declared.choices:
    flags.DEFINE_enum(name, default, declared.choices, text, flag_values=fv)
  elif declared.type is bool:
    flags.DEFINE_boolean(name, default, text, flag_values=fv)
  elif declared.type is int:
    flags.DEFINE_integer(name, default, text, flag_values=fv)
  elif declared.type is float:
    flags.DEFINE_float(name, default, text, flag_values=fv)
  elif declared.type is tuple:
    flags.DEFINE_list(name, default, text, flag_values=fv)
  else:
    flags.DEFINE_string(name, default, text, flag_values=fv)
    # flags.txt, the run's saved command line, holds one flag per line.
    flags.register_validator(
        name, lambda v: v is None or v.isprintable(), message=(
            f"--{name} must not hold a newline or another control "
            "character (the run's flags.txt could not replay it)"),
        flag_values=fv)
  if declared.type in (int, float):
    # Every number a run takes fits the tensors and seeds it becomes; a
    # float is finite (--learning_rate=inf would pass "positive").
    flags.register_validator(name, _representable, message=(
        f"--{name} must be a finite number" if declared.type is float else
        f"--{name} must be smaller than {_INT_LIMIT:,} in magnitude"),
        flag_values=fv)
  if declared.check:
    predicate, message = declared.check

    def valid(value, predicate=predicate, declared=declared):
      if declared.type is tuple:
        if not value:
          return True
        value = declared.parse(value)
        return value is not None and predicate(value)
      return predicate(value)

    flags.register_validator(name, valid, message=f"--{name} {message}",
                             flag_values=fv)


_INT_LIMIT = 2**31


def _representable(value) -> bool:
  return value is None or (math.isfinite(value) and abs(value) < _INT_LIMIT)


def parse(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> list[str]:
  """Parses the command line; a bad flag (or flagfile) is one `error:` line
  and exit status 2, not absl's usage text."""
  try:
    return fv(command_line.arrange(_expand_presets(argv), fv, _note))
  except flags.CantOpenFlagFileError as e:
    fail(f"--flagfile: cannot open it ({str(e).split(': ', 1)[-1]})")
  except flags.Error as e:
    # absl shows a list flag's value as a Python list: show it as typed.
    text = str(e).strip()
    # A value with a newline in it is shown escaped, on the one line.
    text = one_line(text) if "control character" in text else (
        text.splitlines()[0])
    fail(re.sub(r"=\[((?:'[^']*'(?:, )?)*)\]:", lambda m: "=" + ",".join(
        re.findall(r"'([^']*)'", m.group(1))) + ":", text))
  except OSError as e:  # --flagfile that cannot be read.
    fail(f"--flagfile={quoted(e.filename)}: cannot read it "
         f"({e.strerror or e})")
  except UnicodeDecodeError as e:
    fail(f"--flagfile={quoted(_undecodable_flagfile(argv))}: not UTF-8 text "
         f"(byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as "
         "UTF-8")
  return []


def _note(line: str) -> None:
  print(f"note: {line}", file=sys.stderr, flush=True)


def _expand_presets(argv: list[str]) -> list[str]:
  """`--preset=NAME` (or `--preset NAME`) -> `--flagfile=<its file>`."""
  known, expanded, args = presets(), [], iter(argv)
  for arg in args:
    name = None
    if arg.startswith("--preset="):
      name = arg.split("=", 1)[1]
    elif arg == "--preset":
      name = next(args, "")
    if name is None:
      expanded.append(arg)
    elif name in known:
      expanded.append(f"--flagfile={known[name]}")
    else:
      fail(f"--preset={quoted(name)}: no such preset; one of "
           f"{', '.join(known)}, or pass your own --flagfile")
  return expanded


def _undecodable_flagfile(argv: list[str]) -> str:
  """The first --flagfile on the command line that is not UTF-8 text."""
  named = [arg.split("=", 1)[1] for arg in argv
           if arg.startswith("--flagfile=")]
  for path in named:
    try:
      with open(path, encoding="utf-8") as f:
        f.read()
    except (OSError, UnicodeDecodeError):
      return path
  return named[0] if named else "?"


def define_overrides(fields: Iterable[str], fv: flags.FlagValues,
                     what: str = "the run's") -> None:
  """Flags for settings a tool takes from a run unless given (default None)."""
  wanted = set(fields)
  for declared in config_lib.all_settings():
    if declared.field in wanted:
      define_setting(declared, fv, default=None,
                     help_suffix=f" (default: {what})")


def _value(declared: settings.Setting, fv: flags.FlagValues):
  value = fv[declared.flag].value
  if declared.type is tuple:
    return declared.parse(value) if value else None
  if declared.absolute_path and value:
    return os.path.abspath(value)
  return value


def to_config(fv: flags.FlagValues = flags.FLAGS) -> config_lib.RunConfig:
  """Turns parsed flags into the run's frozen config (which fills in the
  model's defaults for flags not given)."""
  sections = {name: {} for name in config_lib.SECTIONS}
  for declared in config_lib.all_settings():
    sections[declared.section][declared.field] = _value(declared, fv)
  return config_lib.RunConfig(**{
      name: config_lib.SECTIONS[name](**values)
      for name, values in sections.items()})
