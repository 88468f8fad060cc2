"""The README and docs/ agree with the code: every relative link and anchor
resolves, every `vae-engine` command names a real tool and real flags, the
flag reference is the one the settings generate, the README stays a quick
start, and no page shows a path of the development machine.

In-process and fast (no subprocess, no training): part of the unit tier.
"""

import ast
import functools
import glob
import os
import re

import pytest

from tests.docs import flag_reference
from tests.helpers import REPO_ROOT

README = os.path.join(REPO_ROOT, "README.md")
PAGES = [README] + sorted(glob.glob(os.path.join(REPO_ROOT, "docs", "*.md")))
README_LIMIT = 8192
# Shell-like code blocks hold commands; others (python, yaml, json) do not.
COMMAND_LANGUAGES = {"", "sh", "bash", "shell", "console", "zsh"}
# Flags absl and the command line add to every command.
COMMON_FLAGS = {"help", "helpfull", "helpshort", "helpxml", "flagfile",
                "undefok", "verbosity", "v"}
# Flags of `vae-engine` that are not settings.
ENGINE_EXTRA_FLAGS = {"preset", "list_models"} | COMMON_FLAGS
FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)[^\n]*\n(.*?)^\1\s*$", re.M | re.S)
# `vae-engine` where a command starts: at a line's start, after a shell
# operator, an assignment (`PYTHONPATH=. vae-engine`) or a quote.
COMMAND = re.compile(r"(?:^|(?<=[\s;&|(`'\"]))vae-engine(?=\s|$)")


def _read(path):
  with open(path, encoding="utf-8") as f:
    return f.read()


def _relative(path):
  return os.path.relpath(path, REPO_ROOT)


def _blocks(text):
  """(language, body) of every fenced code block."""
  return [(m.group(2).lower(), m.group(3)) for m in FENCE.finditer(text)]


def _prose(text):
  """The text outside fenced code blocks and inline code spans."""
  text = FENCE.sub("", text)
  return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text, flags=re.S)


def _inline_code(text):
  """Every inline code span outside fenced blocks."""
  return [m.group(2) for m in re.finditer(r"(`+)((?:(?!\1).)+?)\1",
                                          FENCE.sub("", text), re.S)]


def slug(heading):
  """GitHub's anchor for a heading's text."""
  text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # Links.
  text = text.replace("`", "").lower()
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path):
  """The anchors of a markdown file's headings (duplicates numbered as
  GitHub numbers them)."""
  found, seen = set(), {}
  for match in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("",
                                                                 _read(path)),
                           re.M):
    base = slug(match.group(1))
    count = seen.get(base, 0)
    found.add(base if count == 0 else f"{base}-{count}")
    seen[base] = count + 1
  return found


def _links(text):
  """The target of every markdown link outside code."""
  return re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)",
                    _prose(text))


def _commands(body):
  """The command lines of a shell block, continuation lines joined and
  comments dropped."""
  joined = re.sub(r"\\\n", " ", body)
  lines = []
  for line in joined.splitlines():
    line = re.sub(r"(^|\s)#.*$", "", line)  # A comment.
    if line.strip():
      lines.append(line)
  return lines


def _invocations(line):
  """The words after each `vae-engine` in a command line, up to the next
  shell operator."""
  found = []
  for match in COMMAND.finditer(line):
    rest = re.split(r"[;|&`]|\$\(", line[match.end():], maxsplit=1)[0]
    found.append([word.strip("'\"") for word in rest.split()])
  return found


@functools.lru_cache(maxsize=None)
def engine_settings():
  from engine import config  # pylint: disable=g-import-not-at-top
  return config.all_settings(with_help=False)


@functools.lru_cache(maxsize=None)
def engine_flags():
  return frozenset({s.flag for s in engine_settings()} | ENGINE_EXTRA_FLAGS)


@functools.lru_cache(maxsize=None)
def tools():
  """The `TOOLS` tuple of engine/main.py, read without importing it."""
  tree = ast.parse(_read(os.path.join(REPO_ROOT, "engine", "main.py")))
  for node in tree.body:
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "TOOLS" for t in node.targets):
      return tuple(ast.literal_eval(node.value))
  raise AssertionError("engine/main.py defines no TOOLS")


@functools.lru_cache(maxsize=None)
def tool_flags(name):
  """The flags `vae-engine <name>` takes, read from its source: the ones it
  defines, the engine's when it calls `flags.define`, and the settings it
  takes over with `define_overrides`."""
  source = _read(os.path.join(REPO_ROOT, "engine", "cli", f"{name}.py"))
  defined = set(re.findall(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']", source))
  if re.search(r"\bflags\.define\(", source):
    defined |= engine_flags()
  by_field = {s.field: s.flag for s in engine_settings()}
  for call in ast.walk(ast.parse(source)):
    if (isinstance(call, ast.Call)
        and getattr(call.func, "attr", None) == "define_overrides"):
      defined |= {by_field[field]
                  for field in ast.literal_eval(call.args[0])}
  return frozenset(defined | COMMON_FLAGS)


def _unknown_flags(words, known):
  """The `--flags` among `words` that `known` lacks (`--noflag` for a
  boolean `flag` counts as known)."""
  unknown = []
  for word in words:
    match = re.match(r"^--(\w+)", word)
    if not match:
      continue
    name = match.group(1)
    if name in known or (name.startswith("no") and name[2:] in known):
      continue
    unknown.append(word)
  return unknown


def _command_problems(words):
  """What is wrong with one `vae-engine ...` invocation (its words)."""
  if not words or words[0] in ("...", "…"):
    return []
  problems = []
  known = engine_flags()
  if not words[0].startswith("-"):
    tool, words = words[0], words[1:]
    if re.fullmatch(r"<\w+>", tool):  # A placeholder: `vae-engine <tool>`.
      return []
    if tool not in tools():
      return [f"`vae-engine {tool}`: no such tool (engine/main.py's TOOLS: "
              f"{', '.join(tools())})"]
    known = tool_flags(tool)
  else:
    tool = None
  split = words.index("--") if "--" in words else len(words)
  for word in _unknown_flags(words[:split], known):
    problems.append(f"{word}: not a flag of `vae-engine"
                    f"{' ' + tool if tool else ''}`")
  # After `--`: the engine's flags, for the tools that start runs.
  for word in _unknown_flags(words[split + 1:], engine_flags()):
    problems.append(f"{word}: not an engine flag (after `--`)")
  return problems


def _all_commands(path):
  """Every `vae-engine` invocation of a page, as (where, words): in shell
  code blocks, and in inline code spans."""
  text = _read(path)
  found = []
  for language, body in _blocks(text):
    if language in COMMAND_LANGUAGES:
      for line in _commands(body):
        found += [(line.strip(), words) for words in _invocations(line)]
  for span in _inline_code(text):
    found += [(span, words) for words in _invocations(span)]
  return found


@pytest.mark.parametrize("path", PAGES, ids=_relative)
def test_relative_links_and_anchors_resolve(path):
  problems = []
  for target in _links(_read(path)):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, mailto:, ...
      continue
    file_part, _, anchor = target.partition("#")
    linked = (os.path.normpath(os.path.join(os.path.dirname(path),
                                            file_part))
              if file_part else path)
    if not os.path.exists(linked):
      problems.append(f"{target}: no such file")
    elif anchor and linked.endswith(".md") and anchor not in anchors(linked):
      problems.append(f"{target}: no heading #{anchor} in "
                      f"{_relative(linked)}")
  assert not problems, f"{_relative(path)}: " + "; ".join(problems)


@pytest.mark.parametrize("path", PAGES, ids=_relative)
def test_commands_name_real_tools_and_flags(path):
  problems = []
  for where, words in _all_commands(path):
    problems += [f"{problem} (in: {where})"
                 for problem in _command_problems(words)]
  assert not problems, f"{_relative(path)}:\n" + "\n".join(problems)


def test_the_checks_see_commands_and_catch_what_is_wrong():
  """The checks themselves: continuation lines, tools, `--`, `--noflag`,
  comments; and a wrong tool, flag or link is found."""
  body = ("vae-engine --model=conv \\\n    --nofigures  # vae-engine bogus\n"
          "PYTHONPATH=. vae-engine evaluate --saved_model=E --max_test_examples=9\n"
          "vae-engine chaos --kills=2 -- --model=dense --train_steps=3\n")
  invocations = [words for line in _commands(body)
                 for words in _invocations(line)]
  assert len(invocations) == 3
  assert invocations[0] == ["--model=conv", "--nofigures"]
  assert not any(_command_problems(words) for words in invocations)
  assert _command_problems(["evalute", "--model_dir=M"])
  assert _command_problems(["--modeldir=M"])
  assert _command_problems(["sample", "--model=conv"])  # Not sample's flag.
  assert _command_problems(["chaos", "--", "--kills=2"])  # Not the engine's.
  assert slug("Killed at any moment (`kill -9`)") == (
      "killed-at-any-moment-kill--9")
  assert _links("[a](b.md#c) `[x](y)` [d](https://e)") == [
      "b.md#c", "https://e"]


def test_the_flag_reference_is_generated_from_the_settings():
  with open(flag_reference.PAGE, encoding="utf-8") as f:
    page = f.read()
  assert page == flag_reference.render(), (
      "docs/flags.md differs from the settings' declarations: run "
      "`python -m tests.docs.flag_reference` and commit docs/flags.md")


def test_the_readme_is_a_quick_start():
  size = os.path.getsize(README)
  assert size < README_LIMIT, (
      f"README.md is {size:,} bytes; keep it under {README_LIMIT:,} and "
      "move the detail to a page under docs/")


@pytest.mark.parametrize("path", PAGES, ids=_relative)
def test_no_development_paths_or_old_command_forms(path):
  text = _read(path)
  for forbidden in ("../shared/", "python tools/"):
    assert forbidden not in text, (
        f"{_relative(path)} mentions {forbidden!r}: use a placeholder "
        "such as path/to/mnist, and `vae-engine <tool>`")
  # One command form: `python -m engine.main` is named once, in the README.
  allowed = 1 if path == README else 0
  assert text.count("python -m engine.main") <= allowed, (
      f"{_relative(path)}: write `vae-engine ...`, not `python -m "
      "engine.main ...`")
