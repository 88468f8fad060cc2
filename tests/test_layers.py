"""The floor plan: the engine's subpackages are layers, and no module
imports from a layer above its own (read from the source, so a lazy import
inside a function counts too)."""

import ast
import os

import pytest

from tests.helpers import REPO_ROOT

# Lowest first. A module may import from its own layer and those below.
LAYERS = (
    ("engine.errors", "engine.startup"),
    ("models",),
    ("engine.config",),
    ("engine.data", "engine.devices", "engine.objectives", "engine.io"),
    ("engine.train", "engine.eval", "engine.serving", "engine.viz"),
    ("engine.run",),
    ("flags", "engine.main", "engine.cli"),
)


def _layer(module: str):
  for index, names in enumerate(LAYERS):
    if any(module == name or module.startswith(name + ".") for name in names):
      return index
  return None


def _modules():
  for top in ("engine", "models", "flags"):
    for directory, _, names in os.walk(os.path.join(REPO_ROOT, top)):
      for name in sorted(names):
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          module = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
          yield module.removesuffix(".__init__"), path


def _imports(path):
  tree = ast.parse(open(path, encoding="utf-8").read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module
      for alias in node.names:  # `from engine import x` imports engine.x.
        yield f"{node.module}.{alias.name}"


def test_every_module_is_in_a_layer():
  unplaced = [module for module, _ in _modules() if _layer(module) is None
              and module not in ("engine",)]
  assert not unplaced, unplaced


def test_no_module_imports_from_a_layer_above_its_own():
  violations = []
  for module, path in _modules():
    own = _layer(module)
    if own is None:
      continue
    for imported in _imports(path):
      layer = _layer(imported)
      if layer is not None and layer > own:
        violations.append(f"{module} (layer {own}) imports {imported} "
                          f"(layer {layer})")
  assert not violations, "\n".join(violations)


@pytest.mark.parametrize("top", ["engine", "engine/config", "engine/data",
                                 "engine/devices", "engine/objectives",
                                 "engine/io", "engine/train", "engine/eval",
                                 "engine/serving", "engine/viz", "engine/run",
                                 "engine/cli", "models", "flags", "tools"])
def test_no_module_is_over_300_lines(top):
  directory = os.path.join(REPO_ROOT, top)
  for name in os.listdir(directory):
    if name.endswith(".py"):
      with open(os.path.join(directory, name), encoding="utf-8") as f:
        lines = sum(1 for _ in f)
      assert lines <= 300, f"{top}/{name}: {lines} lines"


def test_the_engines_top_level_is_small():
  top = [name for name in os.listdir(os.path.join(REPO_ROOT, "engine"))
         if name.endswith(".py")]
  assert len(top) <= 8, sorted(top)


def _trainer_attributes(source: str):
  """(line, attribute) for every `<...>trainer.<attribute>` in `source`:
  a name or attribute called `trainer` (or ending in `_trainer`)."""
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.Attribute):
      continue
    owner = node.value
    name = (owner.id if isinstance(owner, ast.Name) else
            owner.attr if isinstance(owner, ast.Attribute) else "")
    if name == "trainer" or name.endswith("_trainer"):
      yield node.lineno, node.attr


def _outside_the_trainers_layer():
  for module, path in _modules():
    if not module.startswith("engine.train"):
      yield module, path
  tools = os.path.join(REPO_ROOT, "tools")
  for name in sorted(os.listdir(tools)):
    if name.endswith(".py"):
      yield f"tools.{name[:-3]}", os.path.join(tools, name)


def test_no_module_outside_train_reaches_into_the_trainer():
  """The build step, the tools and the actions use the trainer's declared
  interface (`Trainer.INTERFACE`): its state is reached through
  `checkpoint_items()` and the loop's outputs, never its internals."""
  from engine.train.trainer import Trainer

  violations, used = [], set()
  for module, path in _outside_the_trainers_layer():
    with open(path, encoding="utf-8") as f:
      for line, attribute in _trainer_attributes(f.read()):
        used.add(attribute)
        if attribute not in Trainer.INTERFACE:
          violations.append(f"{module}:{line} uses trainer.{attribute}")
  assert not violations, "\n".join(violations)
  assert used >= {"train", "checkpoint_items", "training_batches"}, used
  # Every name of the interface exists: a method, a property or an
  # attribute its constructor sets.
  with open(os.path.join(REPO_ROOT, "engine", "train", "trainer.py"),
            encoding="utf-8") as f:
    assigned = {node.attr for node in ast.walk(ast.parse(f.read()))
                if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
                and isinstance(getattr(node, "ctx", None), ast.Store)}
  missing = [name for name in Trainer.INTERFACE
             if not hasattr(Trainer, name) and name not in assigned]
  assert not missing, missing


def test_the_trainer_check_sees_every_way_of_naming_it():
  source = ("run.trainer.non_finite\nself.trainer.norms.stopped\n"
            "trainer.train(3)\nreference_trainer.global_step\n"
            "trainers.make\n")
  assert sorted(_trainer_attributes(source)) == [
      (1, "non_finite"), (2, "norms"), (3, "train"), (4, "global_step")]
