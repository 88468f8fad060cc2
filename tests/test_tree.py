"""The test tree mirrors the package, and tests share helpers through helper
modules (tests/helpers.py, or a helper module beside its users such as
tests/engine/train/trainers.py), never by importing another test module:
a test module is collected, parametrized and marked for its own tests, and
importing one drags its fixtures and markers along."""

import ast
import os

from tests.helpers import REPO_ROOT

_TESTS = os.path.join(REPO_ROOT, "tests")
# Folders of tests that are not about one package folder.
_NOT_MIRRORED = {"tests", "tests/docs"}


def _python_files():
  for root, dirs, files in os.walk(_TESTS):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    for name in files:
      if name.endswith(".py"):
        yield os.path.join(root, name)


def _imported_modules(path):
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _test_module_imports(path):
  return sorted({module for module in _imported_modules(path)
                 if module.startswith("tests.")
                 and module.rsplit(".", 1)[-1].startswith("test_")})


def test_no_test_module_imports_another():
  offenders = {os.path.relpath(path, REPO_ROOT): imports
               for path in _python_files()
               if (imports := _test_module_imports(path))}
  assert not offenders, ("move what these import into a helper module: "
                         f"{offenders}")


def test_the_check_sees_both_ways_of_importing_a_test_module(tmp_path):
  source = tmp_path / "sample.py"
  source.write_text("from tests.flags.test_usage import flag_groups\n"
                    "from tests.engine.cli import test_chaos\n"
                    "from tests.engine.serving.exports import KINDS\n"
                    "import tests.helpers\n")
  assert _test_module_imports(str(source)) == [
      "tests.engine.cli.test_chaos", "tests.flags.test_usage"]


def test_every_test_folder_mirrors_a_package_folder():
  unmatched = []
  for root, dirs, _ in os.walk(_TESTS):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    relative = os.path.relpath(root, REPO_ROOT)
    if relative in _NOT_MIRRORED:
      continue
    package = os.path.join(REPO_ROOT, os.path.relpath(root, _TESTS))
    if not os.path.isfile(os.path.join(package, "__init__.py")):
      unmatched.append(relative)
  assert not unmatched, f"no package folder for {unmatched}"
