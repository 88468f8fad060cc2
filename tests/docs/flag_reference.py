"""docs/flags.md, generated from the settings' declarations, never by hand.

Every flag of a run is a setting declared once (`engine.config`); this
module renders those declarations (help, type, default, allowed values,
whether a resumed run may change it) as markdown, section by section, with
the command-line flags that are not settings (`--preset` from its
definition). After changing a setting, regenerate the page:

    python -m tests.docs.flag_reference

tests/docs/test_docs.py fails while the page and `render()` differ.
"""

from __future__ import annotations

import os
import re
from unittest import mock

PAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "docs", "flags.md")

# Config section -> (title, what it holds).
SECTIONS = {
    "data": ("Data", "where the images come from and how they are "
             "preprocessed"),
    "model": ("Model", "which VAE to build and the objective it is trained "
              "with"),
    "train": ("Training", "the outer loop, the optimizer and its schedule, "
              "the guards, where files go"),
    "distribution": ("Distribution", "how training is spread over devices "
                     "and machines"),
}
_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
          tuple: "comma-separated list"}
# Flags of the command line that are not settings (absl's and the engine's).
_COMMAND_FLAGS = (
    ("flagfile", "Read flags from this file, one per line, as if given "
     "here (a run's saved `flags.txt` is such a file). A flag given on the "
     "command line wins over the file's, wherever it stands."),
    ("list_models", "Print every model `--model` can name (the engine's "
     "and installed packages'), with descriptions; given alone."),
    ("help", "The usage, the key flags and the tools (`-h` too)."),
    ("helpfull", "Every engine flag, grouped by config section."),
    ("verbosity", "absl's logging level. Given at all, it also shows what "
     "the engine holds back: TensorFlow's start-up lines and INFO logs."),
)


def _markdown(text: str) -> str:
  """A help text as markdown: flags and `<placeholders>` as code."""
  text = re.sub(r"[\w./$~-]*<\w+>[\w./<>-]*",
                lambda m: f"`{m.group(0).rstrip('.')}`"
                + ("." if m.group(0).endswith(".") else ""), text)
  return re.sub(r"(?<![`\w-])--[a-z]\w*(?:=[\w.,-]*\w)?",
                lambda m: f"`{m.group(0)}`", text)


def _default(declared) -> str:
  """The default as the command line writes it."""
  from engine.config import settings  # pylint: disable=g-import-not-at-top
  value = declared.default
  if declared.model_default:
    return "the model's"
  if value is None:
    return "unset"
  if isinstance(value, bool):
    return f"`{str(value).lower()}`"
  return f"`{settings.shown(value)}`" if value != "" else '`""`'


def _entry(declared) -> list[str]:
  name = declared.flag
  kind = _TYPES.get(declared.type, declared.type.__name__)
  if declared.type is bool:
    kind += f" (`--no{name}` sets it false)"
  facts = [kind, f"default {_default(declared)}"]
  if declared.choices:
    facts.append("one of " + ", ".join(f"`{c}`" for c in declared.choices))
  if declared.resume_safe:
    facts.append("may change when a run resumes")
  return [f"### `--{name}`", "", _markdown(declared.help), "",
          f"*{'; '.join(facts)}.*", ""]


def _preset_help() -> str:
  """`--preset`'s help, as `flags.definitions` defines it."""
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  from flags import definitions  # pylint: disable=g-import-not-at-top
  fv = absl_flags.FlagValues()
  definitions.define(fv)
  return fv["preset"].help


def render() -> str:
  """docs/flags.md as the settings declare it today.

  The engine's own models are described in `--model`'s help; installed
  packages' models (which differ between machines) are left to
  `vae-engine --list_models`.
  """
  # pylint: disable=g-import-not-at-top
  import models  # noqa: F401  (--model's help describes the registry)
  from models import plugins
  from engine import config as config_lib
  with mock.patch.object(plugins, "describe_installed", lambda: []):
    declared = config_lib.all_settings()
  lines = [
      "# Flag reference", "",
      "Every flag `vae-engine` takes, for looking one up: what it means, its "
      "type and default, the values it allows, and whether a resumed run may "
      "change it (every other setting must match the run's `config.json`; "
      "see [Resume, recover, fine-tune](resume.md)). The tools take their "
      "own flags (`vae-engine <tool> --help`, and [Tools](tools.md)). "
      "`vae-engine --helpfull` prints the same help.", "",
      "This page is generated from the settings' declarations "
      "(`engine/config/`) by `python -m tests.docs.flag_reference`; do not "
      "edit it by hand. A test fails while the two differ.", "",
      "Sections: " + ", ".join(
          f"[{title}](#{title.lower()})" for title, _ in SECTIONS.values())
      + ", [Command line](#command-line).", ""]
  for section, (title, what) in SECTIONS.items():
    lines += [f"## {title}", "", f"Settings of `{section}`: {what}.", ""]
    for setting in declared:
      if setting.section == section:
        lines += _entry(setting)
  lines += ["## Command line", "",
            "Flags of the command line that are not settings of the run.", "",
            "### `--preset`", "", _markdown(_preset_help()), "",
            "*string; default unset.*", ""]
  for name, text in _COMMAND_FLAGS:
    lines += [f"### `--{name}`", "", text, ""]
  return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
  text = render()
  with open(PAGE, "w", encoding="utf-8") as f:
    f.write(text)
  print(f"wrote {PAGE} ({len(text.encode('utf-8')):,} bytes)")


if __name__ == "__main__":
  main()
