"""The command line's help and its line for a mistyped word (`flags.usage`),
on flags of their own; `tests/engine/test_main.py` runs the real command."""

import ast
import pathlib
import re

from absl import flags as absl_flags
import pytest

import flags
from engine import config as config_lib
from flags import usage
from tests.helpers import REPO_ROOT, flag_groups

TOOLS = ("evaluate", "sample", "export", "convert_dataset", "reproduce")
CLI = pathlib.Path(REPO_ROOT) / "engine" / "cli"


def _engine_flags():
  """The engine's flags, a foreign library's flag, and a tool's own."""
  fv = absl_flags.FlagValues()
  flags.define(fv)
  # Defined here, as TensorFlow's tensor tracer defines its flags in its own
  # module: neither the engine's nor the tool's (below, by name).
  absl_flags.DEFINE_boolean("tt_check_filter", False, "A foreign flag.",
                            flag_values=fv)
  absl_flags.DEFINE_float("delta_threshold", 0.5, "Another foreign one.",
                          flag_values=fv)
  return fv


@pytest.mark.parametrize("argv,kind", [
    (["--help"], "short"), (["-h"], "short"), (["-?"], "short"),
    (["-help"], "short"), (["--helpshort"], "short"),
    (["--model=conv", "--helpfull"], "full"), (["--help=false"], None),
    (["--model=conv"], None), (["evaluate"], None),
    # After `--`: the flags of the command a tool runs (chaos, launch_local).
    (["--kills=3", "--", "--help"], None)])
def test_what_asks_for_help(argv, kind):
  assert usage.requested(["vae-engine", *argv]) == kind


def test_helpfull_groups_the_engines_flags_by_config_section():
  fv = _engine_flags()
  text = usage.full_help(fv, "Usage: vae-engine ...\n", command="vae-engine",
                         tools={name: "" for name in TOOLS})
  groups = flag_groups(text)
  assert list(groups) == ["data", "model", "train", "distribution",
                          "general"], list(groups)
  for declared in config_lib.all_settings(with_help=False):
    assert groups[declared.section].count(declared.flag) == 1, declared.flag
  # absl's --verbosity and --help are on absl's FLAGS, not on these.
  assert groups["general"] == ["flagfile", "preset"]
  assert "tt_check_filter" not in text and "delta_threshold" not in text
  # Each section says what it holds (its docstring's first sentence).
  assert ("model: Which VAE to build and the objective it is trained with.\n"
          in text)
  assert ("data: Where the images come from and how they are preprocessed.\n"
          in text)
  assert "tools (vae-engine <tool> --help for one): evaluate, sample," in text


def test_help_shows_the_key_flags_in_a_line_with_their_defaults():
  fv = _engine_flags()
  text = usage.short_help(
      fv, "Usage: vae-engine ...\n", command="vae-engine",
      key_flags=("model", "model_dir", "batch_size", "strategy", "flagfile"),
      tools={"evaluate": "Test-set ELBO and NLL.\n\nMore.",
             "reproduce": "Reproduces a\npublished table. More."})
  one_line = " ".join(text.split())
  assert text.startswith("Usage: vae-engine")
  assert "--model_dir: " + fv["model_dir"].help.split(". ")[0] in one_line
  assert "default: runs/<model>_<data> in the current directory" in one_line
  assert "(default: '128')" in text and "(default: 'conv')" in text
  # A long first sentence loses its asides rather than its end.
  assert ("--strategy: tf.distribute strategy: default, one_device, mirrored, "
          "multi_worker_mirrored. (default: 'default')") in one_line
  assert "--flagfile: Read flags from this file" in text
  assert "evaluate Test-set ELBO and NLL." in one_line
  assert "reproduce Reproduces a published table." in one_line
  assert "More." not in text
  assert "vae-engine --helpfull lists every flag" in text
  # Only the key flags: no other setting, no foreign flag.
  assert "--latent_dim" not in text and "tt_check_filter" not in text


def test_a_tools_help_lists_its_own_flags_first():
  fv = absl_flags.FlagValues()
  flags.define(fv)
  # This module stands for the tool's: the flags it defines are its own.
  absl_flags.DEFINE_string("output_json", None, "Where to write the results.",
                           flag_values=fv)
  own = (__name__,)
  short = usage.short_help(fv, "Does a thing.\n", command="vae-engine tool",
                           own_modules=own)
  assert short.startswith("Does a thing.\n")
  assert "flags:\n  --output_json: Where to write the results.\n" in short
  assert "--model:" not in short  # The engine's are in --helpfull.
  assert "vae-engine tool --helpfull lists every flag" in short
  full = usage.full_help(fv, "Does a thing.\n", command="vae-engine tool",
                         own_modules=own)
  groups = flag_groups(full)
  assert list(groups) == ["vae-engine tool", "data", "model", "train",
                          "distribution", "general"], list(groups)
  assert groups["vae-engine tool"] == ["output_json"]


@pytest.mark.parametrize("word,fragment", [
    ("evalute", "did you mean 'evaluate'?"),
    ("expor", "did you mean 'export'?"),
    ("convert", "did you mean 'convert_dataset'?"),
    ("model=conv", "did you mean '--model=conv'?"),
    ("modle=conv", "did you mean '--model=conv'?"),
    ("train_steps", "did you mean '--train_steps'?")])
def test_a_mistyped_word_gets_the_closest_tool_or_flag(word, fragment):
  line = usage.unknown_word(word, TOOLS, _engine_flags())
  assert line.startswith(f"{word}: not a tool or flag; {fragment} tools: "
                         "evaluate, sample, export, convert_dataset, "
                         "reproduce"), line


@pytest.mark.parametrize("word", ["xyzzy", "train", "", "a\nb"])
def test_a_word_close_to_nothing_gets_the_tools(word):
  line = usage.unknown_word(word, TOOLS, _engine_flags())
  assert "did you mean" not in line and "\n" not in line
  assert ": not a tool or flag; tools: evaluate, sample, " in line
  assert line.endswith("(flags: vae-engine --help)")


def _tool_docs():
  """Each tool's module docstring (`engine.main.TOOLS`), as Python reads it,
  without importing: a tool defines its flags when imported."""
  main = ast.parse((pathlib.Path(REPO_ROOT) / "engine" / "main.py").read_text())
  tools = next(ast.literal_eval(node.value) for node in main.body
               if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", None) == "TOOLS")
  return {name: ast.get_docstring(ast.parse((CLI / f"{name}.py").read_text()),
                                  clean=False) for name in tools}


def test_every_tools_examples_are_vae_engine_commands():
  docs = _tool_docs()
  assert {"evaluate", "convert_dataset", "reproduce"} <= set(docs)
  for name, doc in docs.items():
    assert "python tools/" not in doc, name
    examples = [line.strip() for line in doc.splitlines()
                if re.match(r"^    (vae-engine|python)\b", line)]
    assert examples, name
    assert all(line.startswith("vae-engine ") for line in examples), (
        name, examples)
    assert any(line.startswith(f"vae-engine {name} ") for line in examples), (
        name, examples)


def test_line_continuations_in_examples_are_kept():
  """A backslash at a line's end in a plain docstring joins the lines, so
  `--help` printed `-- ` and then nine spaces before the next flag."""
  for name, doc in _tool_docs().items():
    assert not re.search(r"\S {4,}--\w", doc), (name, doc)
  chaos = _tool_docs()["chaos"]
  assert ("vae-engine chaos --kills=12 --work_dir=/tmp/chaos -- \\\n"
          "        --model=dense") in chaos
