"""How a setting is declared: once, with its type, default, help and check.

`engine.config` declares every field of a run's configuration with
`setting(...)`. The absl flags (`flags.definitions`), the frozen config, its
JSON (`config.json`), the saved flagfile and the tools' flags are all derived
from these declarations (as Flax's `configs/default.py` + `config_flags`
do), so a setting is written in one place.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import numbers
import os
import typing
from typing import Any, Callable, Optional, Sequence

from engine.errors import UserError

# (predicate, message); the message follows "--<flag> ".
Check = tuple[Callable[[Any], bool], str]

POSITIVE: Check = (lambda v: v is None or v > 0, "must be a positive number")
NON_NEGATIVE: Check = (lambda v: v is None or v >= 0,
                       "must be zero or positive")
UNIT_INTERVAL: Check = (lambda v: v is None or 0 <= v <= 1,
                        "must be in [0, 1]")
NOT_EMPTY: Check = (bool, "must not be empty")
EXISTING_PATH: Check = (lambda v: v is None or os.path.exists(v),
                        "is not an existing directory or file")


# What a number setting may be: it becomes a tensor or a seed.
INT_LIMIT = 2**31


class ConfigError(UserError, ValueError):
  """A setting's value that its declaration refuses, in a config made in
  code or read back: the message is the one the flag gives
  (`--flag=value: what is wrong`), and a run reports it as every
  `UserError`: one line, exit status 2."""


# Off while a saved config is read back: its data may since have moved.
_CHECK_FILES = contextvars.ContextVar("check_files", default=True)


@contextlib.contextmanager
def reading_saved_config():
  """Within: sections do not check settings that name files."""
  token = _CHECK_FILES.set(False)
  try:
    yield
  finally:
    _CHECK_FILES.reset(token)


def check_section(section, name: str) -> None:
  """Checks every setting of a section (a frozen dataclass of `setting`s)
  as its flag would be checked.

  Raises:
    ConfigError: For the first setting whose value is refused.
  """
  for declared_setting in declared(name, type(section), with_help=False):
    value = getattr(section, declared_setting.field)
    plain = normalized(declared_setting, value)
    if plain is not value:
      object.__setattr__(section, declared_setting.field, plain)
    message = problem(declared_setting, plain, files=_CHECK_FILES.get())
    if message:
      raise ConfigError(message)


def _plain_number(value, kind):
  """numpy's (and any other) integers and reals as Python's own, so a config
  holds what `config.json` can write; anything else as it is."""
  if isinstance(value, bool):
    return value
  if isinstance(value, numbers.Integral) and kind in (int, float):
    return int(value)
  if isinstance(value, numbers.Real) and kind is float:
    return float(value)
  return value


def normalized(declared: Setting, value):
  """`value` in the config's own types: a list setting's list (JSON's) as a
  tuple, numbers as Python's `int`/`float`. What cannot be converted is
  returned unchanged, for `problem` to refuse."""
  if declared.type is tuple and isinstance(value, list):
    value = tuple(value)
  if (declared.type is tuple and isinstance(value, numbers.Integral)
      and not isinstance(value, bool)):
    # One number, as `--image_size=32` is one (it may stand for both sides).
    parsed = declared.parse([str(int(value))])
    return value if parsed is None else parsed
  if declared.type is tuple and isinstance(value, tuple):
    plain = tuple(_plain_number(v, int) for v in value)
    return value if plain == value and all(
        type(a) is type(b) for a, b in zip(plain, value)) else plain
  if declared.type in (int, float):
    plain = _plain_number(value, declared.type)
    return value if type(plain) is type(value) else plain
  return value


def int_list(values) -> Optional[tuple]:
  """["1", "20"] -> (1, 20), any length; None if one is not an integer."""
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    return None


def int_tuple(values, lengths=(2,), minimum=0) -> Optional[tuple]:
  """["1", "2"] -> (1, 2); None unless `lengths` ints of at least `minimum`.
  One value where two are allowed stands for both (`--image_size=32`)."""
  try:
    numbers = tuple(int(v) for v in values)
  except ValueError:
    return None
  if len(numbers) not in lengths or any(n < minimum for n in numbers):
    return None
  return numbers * 2 if len(numbers) == 1 and 2 in lengths else numbers


def setting(default: Any, help: str | Callable[[], str], *, flag: Optional[str] = None,
            choices: Sequence[str] | Callable[[], Sequence[str]] | None = None,
            check: Optional[Check] = None,
            model_default: Optional[Callable[[Any], Any]] = None,
            absolute_path: bool = False,
            parse: Optional[Callable[[list], Any]] = None,
            resume_safe: bool = False,
            validate: Optional[Callable[[Any], Optional[str]]] = None) -> Any:
  """A configuration field declared once.

  Args:
    default: The config's default.
    help: The flag's help text (also the field's documentation), or a
      function that returns it (text that lists the model registry).
    flag: The flag's name, when it is not the field's.
    choices: Allowed values (or a function returning them: the model
      registry): an enum flag.
    check: A (predicate, message) the value must satisfy.
    model_default: The model's default (a function of its
      `models.registry.ModelSpec`), taken when the setting is None: the
      config resolves it itself (`sections.RunConfig`), so a config made in
      code gets what the command line gives.
    absolute_path: Made absolute when read from the command line, so tools
      reading the saved config work from any directory.
    parse: For a tuple setting (a comma-separated flag): the flag's strings
      -> the value, or None if they do not make one.
    resume_safe: May differ when a run resumes (how long, how often, where
      files go, which hardware): it does not change what the run trains.
      Every other setting must equal the run's (`config.json`) to resume.
    validate: For checks whose message depends on the value (the model
      registry): value -> what is wrong with it, or None.
  """
  return dataclasses.field(default=default, metadata={
      "help": help, "flag": flag, "choices": choices, "check": check,
      "model_default": model_default, "absolute_path": absolute_path,
      "parse": parse, "resume_safe": resume_safe, "validate": validate})


@dataclasses.dataclass(frozen=True)
class Setting:
  """A declared field, as the flags see it."""

  section: str
  field: str
  flag: str
  type: type
  optional: bool
  default: Any
  help: str
  choices: Optional[tuple]
  check: Optional[Check]
  model_default: Optional[Callable[[Any], Any]]
  absolute_path: bool
  parse: Optional[Callable[[list], Any]]
  resume_safe: bool
  validate: Optional[Callable[[Any], Optional[str]]] = None


def declared(section: str, cls, with_help: bool = True) -> list[Setting]:
  """The settings of one config section (a dataclass of `setting`s);
  `with_help=False` leaves their help empty (it may list the models)."""
  hints = typing.get_type_hints(cls)
  found = []
  for field in dataclasses.fields(cls):
    meta = field.metadata
    if "help" not in meta:
      continue
    kind, optional = hints[field.name], False
    if typing.get_origin(kind) is typing.Union:
      kind = next(a for a in typing.get_args(kind) if a is not type(None))
      optional = True
    choices = meta["choices"]
    found.append(Setting(
        section=section, field=field.name, flag=meta["flag"] or field.name,
        type=typing.get_origin(kind) or kind, optional=optional,
        default=field.default,
        help=("" if not with_help else meta["help"]() if callable(
            meta["help"]) else meta["help"]),
        choices=tuple(choices() if callable(choices) else choices)
        if choices else None,
        check=meta["check"], model_default=meta["model_default"],
        absolute_path=meta["absolute_path"], parse=meta["parse"],
        resume_safe=meta["resume_safe"], validate=meta["validate"]))
  return found


def shown(value) -> str:
  """A value as the command line writes it (`--image_size=32,32`)."""
  if isinstance(value, (tuple, list)):
    return ",".join(str(v) for v in value)
  if isinstance(value, str) and not value.isprintable():
    return repr(value)
  return str(value)


def problem(declared: Setting, value, *, files: bool = True) -> Optional[str]:
  """What is wrong with `value` for the setting, as the flag says it
  (`--batch_size=-3: must be a positive number`), or None.

  The one implementation of a setting's rules: the flags' validators and the
  config's own (`RunConfig` made in code) both call it.

  Args:
    declared: The setting.
    value: Its value as the config holds it (a tuple for a list flag).
    files: Also check what refers to the file system (an existing path);
      off for a saved `config.json`, whose data may since have moved.
  """
  message = _problem(declared, value, files)
  return message and f"--{declared.flag}={shown(value)}: {message}"


def _problem(declared: Setting, value, files: bool) -> Optional[str]:
  kind = declared.type
  if value is None:
    return None if declared.optional else "must be given"
  if kind is bool:
    return None if isinstance(value, bool) else "must be true or false"
  if kind in (int, float):
    number = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, number):
      wanted = "an integer" if kind is int else "a number"
      # Where the value as shown hides its type ("12", [32], True).
      hidden = isinstance(value, bool) or not isinstance(value, (int, float))
      return f"must be {wanted}" + (
          f", not a {type(value).__name__}" if hidden else "")
    if isinstance(value, float) and not math.isfinite(value):
      return "must be a finite number"
    # An int is checked without becoming a float: 10**400 is no float.
    if abs(value) >= INT_LIMIT:
      return f"must be smaller than {INT_LIMIT:,} in magnitude"
  elif kind is tuple:
    if not isinstance(value, (tuple, list)) or declared.parse(
        [str(v) for v in value]) != tuple(value):
      return (declared.check[1] if declared.check else
              "is not a valid list for this setting (see its --help)")
  elif kind is str:
    if not isinstance(value, str):
      return "must be a string"
    if not value.isprintable():
      # flags.txt, the run's saved command line, holds one flag per line.
      return ("must not hold a newline or another control character (the "
              "run's flags.txt could not replay it)")
  if declared.choices and value not in declared.choices:
    return f"must be one of {', '.join(declared.choices)}"
  if declared.check and (files or declared.check is not EXISTING_PATH):
    predicate, message = declared.check
    if not predicate(value):
      return message
  if declared.validate:
    return declared.validate(value)
  return None
