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
import os
import re
import sys
import weakref
from typing import Iterable, Optional

from absl import flags

from engine import config as config_lib
from engine.config import settings
from engine.errors import UserError, fail, one_line, quoted
from flags import command_line

_defined = False
# The engine's own `--preset` flags: a tool may define a flag of that name
# for something else (`preset_rate --preset=iwae_vae` names the preset it
# times), which is then its value, not a flagfile.
_ENGINE_PRESET_FLAGS = weakref.WeakSet()


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
  _ENGINE_PRESET_FLAGS.add(flag_values["preset"])
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
    # A string flag, not absl's enum, so a bad value gets the same words
    # from the flag as from a config made in code (`settings.problem`).
    text += f" One of: {', '.join(declared.choices)}."
  define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
            float: flags.DEFINE_float, tuple: flags.DEFINE_list}.get(
                declared.type, flags.DEFINE_string)
  define(name, default, text, flag_values=fv)

  def valid(value, declared=declared):
    if value is None or (declared.type is tuple and not value):
      return True
    if not fv[name].present and value == default:
      # The declared default (checked by the config built from the flags):
      # checking it here would load the model registry, and TensorFlow
      # with it, before a bad flag could be named.
      return True
    if declared.type is tuple:
      parsed = declared.parse(value)
      if parsed is None:
        raise flags.ValidationError(
            f"--{declared.flag}={','.join(value)}: "
            + (declared.check[1] if declared.check else "not a valid list"))
      value = parsed
    message = settings.problem(declared, value)
    if message:
      raise flags.ValidationError(message)
    return True

  flags.register_validator(name, valid, flag_values=fv)


def parse(argv: list[str], fv: flags.FlagValues = flags.FLAGS) -> list[str]:
  """Parses the command line; a bad flag (or flagfile) is one `error:` line
  and exit status 2, not absl's usage text."""
  try:
    return _parse(argv, fv)
  except UserError as e:
    fail(str(e))
  return []


def config_from_argv(argv: list[str]) -> config_lib.RunConfig:
  """The config a command line makes (`["--model=dense", "--preset=..."]`,
  flagfiles too), parsed as `vae-engine` parses it, on flags of its own.

  Raises:
    UserError: With the line `vae-engine` would print for the same flags.
  """
  fv = flags.FlagValues()
  define(fv)
  rest = _parse(["vae-engine", *argv], fv)
  if len(rest) > 1:
    raise UserError(f"unexpected arguments: {' '.join(rest[1:])}")
  return to_config(fv)


def _parse(argv: list[str], fv: flags.FlagValues) -> list[str]:
  try:
    engines = "preset" not in fv or fv["preset"] in _ENGINE_PRESET_FLAGS
    expanded = _expand_presets(argv) if engines else argv  # Else a tool's.
    return fv(command_line.arrange(expanded, fv, _note))
  except flags.CantOpenFlagFileError as e:
    raise UserError(
        f"--flagfile: cannot open it ({str(e).split(': ', 1)[-1]})") from None
  except flags.Error as e:
    # absl shows a list flag's value as a Python list: show it as typed.
    text = str(e).strip()
    # A value with a newline in it is shown escaped, on the one line.
    text = one_line(text) if "control character" in text else (
        text.splitlines()[0])
    # A setting's validator says `--flag=value: what is wrong` itself (as a
    # config made in code does); absl puts the flags' values before it.
    text = re.sub(r"^flags? (--)?\w+=.*?: (?=--\w)", "", text)
    text = _unparsable(text) or text
    raise UserError(re.sub(
        r"=\[((?:'[^']*'(?:, )?)*)\]:", lambda m: "=" + ",".join(
            re.findall(r"'([^']*)'", m.group(1))) + ":", text)) from None
  except OSError as e:  # --flagfile that cannot be read.
    raise UserError(f"--flagfile={quoted(e.filename)}: cannot read it "
                    f"({e.strerror or e})") from None
  except UnicodeDecodeError as e:
    raise UserError(
        f"--flagfile={quoted(_undecodable_flagfile(argv))}: not UTF-8 text "
        f"(byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as "
        "UTF-8") from None


# absl's words for a value its parser cannot read, and the settings' own.
_PARSER_WORDS = (("invalid literal for int()", "must be an integer"),
                 ("could not convert string to float", "must be a number"),
                 ("Non-boolean argument", "must be true or false"))


def _unparsable(text: str) -> Optional[str]:
  """`flag --batch_size=12.5: invalid literal for int() ...` said as a
  config made in code says it: `--batch_size=12.5: must be an integer`."""
  match = re.match(r"^flag --(\w+=.*?): (.*)$", text)
  for words, ours in _PARSER_WORDS:
    if match and words in match.group(2):
      return f"--{match.group(1)}: {ours}"
  return None


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
      raise UserError(f"--preset={quoted(name)}: no such preset; one of "
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
