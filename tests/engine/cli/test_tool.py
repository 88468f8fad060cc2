"""What every tool shares (engine/cli/tool.py): flags of its own, defined on
any FlagValues, which its `--help` lists (each tool's help as a process:
test_main's test_a_tools_help_exits_0_with_vae_engine_examples)."""

import importlib
import inspect

import pytest
from absl import flags as absl_flags

from engine import main
from flags import usage


def _takes_flag_values(name):
  define = getattr(importlib.import_module(f"engine.cli.{name}"),
                   "define_flags", None)
  return define is not None and bool(inspect.signature(define).parameters)


# The tools `run_tool_in_process` (tests/helpers.py) can run.
_ON_GIVEN_FLAG_VALUES = [name for name in main.TOOLS
                         if _takes_flag_values(name)]


def test_the_tools_that_tests_run_in_process_define_flags_on_any_values():
  assert {"evaluate", "sample", "plot", "export", "reproduce", "nll_rate",
          "convert_dataset"} <= set(_ON_GIVEN_FLAG_VALUES)


@pytest.mark.parametrize("name", _ON_GIVEN_FLAG_VALUES)
def test_a_tools_own_flags_go_where_asked_and_into_its_help(name):
  module = importlib.import_module(f"engine.cli.{name}")
  on_global = len(absl_flags.FLAGS.get_flags_for_module(module.__name__))
  fv = absl_flags.FlagValues()
  module.define_flags(fv)
  own = fv.get_flags_for_module(module.__name__)
  assert own, f"{name} defined none of its flags as its own"
  # None of them on absl's global flags, where the engine's are.
  assert len(absl_flags.FLAGS.get_flags_for_module(module.__name__)) == (
      on_global)
  text = usage.short_help(fv, module.__doc__ or "",
                          command=f"vae-engine {name}",
                          own_modules=(module.__name__,))
  for flag in own:
    assert f"--{flag.name}" in text, (name, flag.name)
