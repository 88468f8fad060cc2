"""How a setting is declared: once, with its type, default, help and check.

`engine.config` declares every field of a run's configuration with
`setting(...)`. The absl flags (`flags.definitions`), the frozen config, its
JSON (`config.json`), the saved flagfile and the tools' flags are all derived
from these declarations (as Flax's `configs/default.py` + `config_flags`
do), so a setting is written in one place.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Callable, Optional, Sequence

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
            resume_safe: bool = False) -> Any:
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
  """
  return dataclasses.field(default=default, metadata={
      "help": help, "flag": flag, "choices": choices, "check": check,
      "model_default": model_default, "absolute_path": absolute_path,
      "parse": parse, "resume_safe": resume_safe})


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


def declared(section: str, cls) -> list[Setting]:
  """The settings of one config section (a dataclass of `setting`s)."""
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
        help=meta["help"]() if callable(meta["help"]) else meta["help"],
        choices=tuple(choices() if callable(choices) else choices)
        if choices else None,
        check=meta["check"], model_default=meta["model_default"],
        absolute_path=meta["absolute_path"], parse=meta["parse"],
        resume_safe=meta["resume_safe"]))
  return found
