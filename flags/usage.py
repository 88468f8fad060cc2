"""The command line's help: `--help`, `--helpfull`, and a mistyped word.

absl's `--help` prints only the flags the `__main__` module defines (none:
the engine's are defined by `flags.definitions`) and exits 1, and its
`--helpfull` lists every flag any imported library registered (TensorFlow's
tensor tracer and pfor, absl's test flags). So the edges (`engine.main`, a
tool's `run_tool`) answer a help request here, before absl reads the command
line: on stdout, with exit status 0. Every line about a flag is derived from
its definition (`engine.config`'s settings, a tool's own flags); what a help
lists is chosen here, what it says is not written twice.

    --help, -h, -?, --helpshort  the usage, the key flags (or a tool's own),
                                 the tools, and where the rest is
    --helpfull                   every flag of the command, grouped by the
                                 config section it sets, then the general
                                 ones (--flagfile, --preset, --verbosity)
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from typing import Iterable, Mapping, Optional, Sequence

from absl import app
from absl import flags

from engine import config as config_lib
from engine.errors import quoted, shorten
from flags import definitions

# absl's flags (and the engine's --preset) a user may pass, in the order
# `--helpfull` lists them; the rest of absl's, and every library's, are left
# out of the help (they still parse).
GENERAL = ("flagfile", "preset", "verbosity", "help", "helpfull")
# The names a help request goes by (with one or two dashes), and its kind.
_REQUESTS = {"help": "short", "h": "short", "?": "short", "helpshort": "short",
             "helpfull": "full"}
# Names answered here that absl does not define (shown with the flag).
_ALIASES = {"help": ("-h",)}
# Flags that act when given rather than hold a value (no `--no` form).
_ACTIONS = ("help", "helpfull", "helpshort")
# --flagfile is absl's special flag, absent from FlagValues; the meaning
# said here is the engine's own (`flags.command_line`: the command line
# wins over the file).
_FLAGFILE = flags.Flag(
    flags.ArgumentParser(), flags.ArgumentSerializer(), "flagfile", None,
    "Read flags from this file, one a line (may be given more than once; a "
    "flag given on the command line wins over the file's, wherever it "
    "stands).")
_ONE_LINE = 160  # About what `--help` shows of a flag's help.


def requested(argv: Sequence[str]) -> Optional[str]:
  """Which help the command line asks for, if any.

  Args:
    argv: The program, then its arguments; those after `--` belong to
      another command (`vae-engine chaos -- --help`) and are not read.

  Returns:
    "short" (`--help`, `-h`, `-?`, `--helpshort`), "full" (`--helpfull`),
    or None.
  """
  for arg in argv[1:]:
    if arg == "--":
      break
    if not arg.startswith("-"):
      continue
    name, _, value = arg.lstrip("-").partition("=")
    if name in _REQUESTS and value.lower() not in ("false", "f", "0", "no"):
      return _REQUESTS[name]
  return None


def show(kind: str, fv: flags.FlagValues, doc: str, *, command: str,
         key_flags: Sequence[str] = (),
         tools: Optional[Mapping[str, str]] = None,
         own_modules: Iterable[str] = ()) -> None:
  """Prints the help `requested` named and exits 0.

  Args:
    kind: "short" or "full".
    fv: The command's flags, all defined.
    doc: Its usage text (the module docstring).
    command: How a user runs it (`vae-engine`, `vae-engine evaluate`).
    key_flags: The flags `--help` shows with one line each (the engine's
      command; a tool's --help shows its own flags instead).
    tools: The engine's tools: name -> its module docstring.
    own_modules: Modules whose flags are the command's own, besides the
      engine's settings (a tool's module).
  """
  # absl's --help and --helpfull, defined before `app.run` would, so the
  # general group lists them (idempotent).
  app.define_help_flags()
  text = (full_help if kind == "full" else short_help)(
      fv, doc, command=command, key_flags=key_flags, tools=tools,
      own_modules=own_modules)
  try:
    sys.stdout.write(text)
    sys.stdout.flush()
  except BrokenPipeError:  # `vae-engine --helpfull | head` is no failure.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  sys.exit(0)


def short_help(fv: flags.FlagValues, doc: str, *, command: str,
               key_flags: Sequence[str] = (),
               tools: Optional[Mapping[str, str]] = None,
               own_modules: Iterable[str] = ()) -> str:
  """The usage, the key flags with one line each (or a tool's own flags in
  full), the tools, and where every flag is listed (arguments: `show`'s)."""
  parts = [doc.strip() + "\n"]
  own = _own_flags(fv, own_modules)
  if own:
    parts.append("flags:\n" + _entries(own))
  if key_flags:
    parts.append("key flags:\n" + _entries(
        [_flag(fv, name) for name in key_flags], brief=True))
  if tools:
    parts.append(f"tools ({command} <tool> --help for one):\n"
                 + _tool_lines(tools))
  more = (f"{command} --helpfull lists every flag, by the config section "
          "it sets" if _engine_flags(fv) else
          f"{command} --helpfull adds the general flags")
  parts.append(flags.text_wrap(
      f"{more}; -v/--verbosity shows TensorFlow's own logs.") + "\n")
  return "\n".join(parts)


def full_help(fv: flags.FlagValues, doc: str, *, command: str,
              key_flags: Sequence[str] = (),
              tools: Optional[Mapping[str, str]] = None,
              own_modules: Iterable[str] = ()) -> str:
  """The usage, then every flag of the command: its own, the engine's by
  config section (`engine.config.SECTIONS`), the general ones (arguments:
  `show`'s)."""
  del key_flags  # Every flag is listed.
  parts = [doc.strip() + "\n"]
  shown = set()
  own = _own_flags(fv, own_modules)
  if own:
    parts.append(f"{command}:\n" + _entries(own))
    shown.update(flag.name for flag in own)
  engine = {flag.name: flag for flag in _engine_flags(fv)}
  settings = config_lib.all_settings(with_help=False)
  for section, cls in config_lib.SECTIONS.items():
    listed = [engine[s.flag] for s in settings
              if s.section == section and s.flag in engine
              and s.flag not in shown]
    if listed:
      parts.append(f"{section}: {_section_summary(cls)}\n"
                   + _entries(listed))
      shown.update(flag.name for flag in listed)
  general = [_flag(fv, name) for name in GENERAL
             if name not in shown and (name == "flagfile" or name in fv)]
  parts.append("general:\n" + _entries(general))
  if tools:
    parts.append(flags.text_wrap(
        f"tools ({command} <tool> --help for one): {', '.join(tools)}")
                 + "\n")
  return "\n".join(parts)


def unknown_word(word: str, tools: Sequence[str], fv: flags.FlagValues,
                 command: str = "vae-engine") -> str:
  """What `error:` says of a bare word where a tool or a flag was expected.

  Args:
    word: The word (`evalute`).
    tools: The tools' names.
    fv: The command's flags.
    command: How a user runs the command.

  Returns:
    The line after `error: `: the closest tool, else the flag the word names
    without its dashes (`model=conv` -> `--model=conv`), and the tools.
  """
  name, equals, value = word.partition("=")
  close = difflib.get_close_matches(word, tools, n=1)
  # Only a word that reads as a flag (`name=value`, or a flag's very name)
  # is taken for one: `train` is no typo of --train_steps.
  names = [f.name for f in _engine_flags(fv)]
  flag = ([name] if name in names else
          difflib.get_close_matches(name, names, n=1) if equals else [])
  if close:
    hint = f"did you mean '{close[0]}'? "
  elif flag:
    hint = f"did you mean '--{flag[0]}{equals}{value}'? "
  else:
    hint = ""
  return (f"{quoted(word) or repr(word)}: not a tool or flag; {hint}tools: "
          f"{', '.join(tools)} (flags: {command} --help)")


def summary(doc: str) -> str:
  """The first sentence of a docstring, on one line."""
  paragraph = (doc or "").strip().split("\n\n", 1)[0]
  return _first_sentence(paragraph)


def _first_sentence(text: str) -> str:
  text = " ".join(text.split())
  # A sentence ends at a full stop before a space; a period inside a name
  # (`tf.distribute`, `mnist.npz`) does not end it.
  return re.split(r"(?<=\.)\s", text, maxsplit=1)[0]


def _brief(text: str) -> str:
  """A flag's help in about a line: its first sentence; if that is long,
  without its asides (parenthesized), and if still long, up to the last
  colon or semicolon that fits."""
  text = _first_sentence(text)
  while len(text) > _ONE_LINE and re.search(r"\([^()]*\)", text):
    text = re.sub(r"\s*\([^()]*\)", "", text)
  if len(text) > _ONE_LINE:
    cut = max(text.rfind(mark, 0, _ONE_LINE) for mark in (": ", "; "))
    text = text[:cut] + " ..." if cut > 0 else shorten(text, _ONE_LINE)
  return text


def _section_summary(cls) -> str:
  """A config section's docstring, first sentence, without an aside."""
  return re.sub(r"\s*\([^()]*\)(?=\.?$)", "", summary(cls.__doc__))


def _flag(fv: flags.FlagValues, name: str) -> flags.Flag:
  return _FLAGFILE if name == "flagfile" else fv[name]


def _engine_flags(fv: flags.FlagValues) -> list[flags.Flag]:
  """The flags `flags.definitions` defined on `fv` (the settings, --preset)."""
  return _defined_by(fv, [definitions.__name__])


def _own_flags(fv: flags.FlagValues,
               modules: Iterable[str]) -> list[flags.Flag]:
  """The flags a tool's own module defined, in the order it defined them.
  absl names `__main__` by its path (`python -m engine.cli.evaluate`)."""
  names = set(modules)
  if "__main__" in names:
    names.add(sys.argv[0])
  return _defined_by(fv, sorted(names))


def _defined_by(fv: flags.FlagValues,
                modules: Sequence[str]) -> list[flags.Flag]:
  by_module = fv.flags_by_module_dict()
  found = []
  for module in modules:
    for flag in by_module.get(module, ()):
      # absl keeps a flag that was since replaced in its module's list.
      if flag.name in fv and fv[flag.name] is flag and flag not in found:
        found.append(flag)
  return found


def _names(flag: flags.Flag) -> str:
  names = [f"-{flag.short_name}"] if flag.short_name else []
  names += _ALIASES.get(flag.name, ())
  names.append(f"--[no]{flag.name}" if flag.boolean and (
      flag.name not in _ACTIONS) else f"--{flag.name}")
  return ",".join(names)


def _entries(flag_list: Sequence[flags.Flag], brief: bool = False) -> str:
  """absl's layout (name: help, then its default), one flag after another;
  `brief`: the help's first sentence only."""
  entries = []
  for flag in flag_list:
    text = flag.help or ""
    if brief:
      text = _brief(text)
    entry = flags.text_wrap(f"{_names(flag)}: {text}", indent="    ",
                            firstline_indent="  ")
    if flag.default_as_str and flag.name not in _ACTIONS:
      entry += "\n" + flags.text_wrap(f"(default: {flag.default_as_str})",
                                      indent="    ")
    if not brief and flag.parser.syntactic_help:
      entry += "\n" + flags.text_wrap(f"({flag.parser.syntactic_help})",
                                      indent="    ")
    entries.append(entry + "\n")
  return "".join(entries)


def _tool_lines(tools: Mapping[str, str]) -> str:
  width = max(len(name) for name in tools) + 2
  return "".join(
      flags.text_wrap(f"{name:<{width}}{summary(doc)}",
                      indent=" " * (width + 2), firstline_indent="  ") + "\n"
      for name, doc in tools.items())
