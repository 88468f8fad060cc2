"""docs/models.md ("Write your own model") as a newcomer follows it: each
file it shows is written where its first line says, outside the repository,
and each command it shows is run on a small MNIST."""

import os
import re
import subprocess
import sys
import tomllib

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.e2e

PAGE = os.path.join(REPO_ROOT, "docs", "models.md")


def _blocks():
  """The page's fenced blocks: [(language, text)]."""
  with open(PAGE, encoding="utf-8") as f:
    return re.findall(r"^```(\w+)\n(.*?)^```$", f.read(), re.M | re.S)


def _files():
  """Path -> text of every block whose first line names its file."""
  files = {}
  for _, text in _blocks():
    first = text.splitlines()[0]
    match = re.match(r"^# ([\w./-]+\.(py|toml))$", first)
    if match:
      files[match.group(1)] = text
  return files


@pytest.fixture
def project(tmp_path):
  """The user's project: the page's files under a directory of its own
  (`myvaes/` given an `__init__.py`, as a package needs)."""
  for path, text in _files().items():
    target = tmp_path / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
  (tmp_path / "myvaes" / "__init__.py").write_text("")
  return tmp_path


def _run(command, cwd, **kwargs):
  env = dict(os.environ, PYTHONPATH=f"{cwd}{os.pathsep}{REPO_ROOT}",
             PATH=os.path.dirname(sys.executable) + os.pathsep
             + os.environ.get("PATH", ""))
  return subprocess.run(command, cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=900, check=False, **kwargs)


def test_the_page_shows_a_builder_a_test_a_package_and_a_python_run():
  assert {"myvaes/resconv.py", "tests/test_resconv.py", "pyproject.toml",
          "train.py", "myvaes/ladder.py", "tests/test_ladder.py"} <= set(
              _files())
  languages = [language for language, _ in _blocks()]
  assert languages.count("sh") == 1


def test_its_contract_test_passes_with_pytest(project):
  result = _run([sys.executable, "-m", "pytest", "-q", "-p",
                 "no:cacheprovider", "--rootdir", str(project),
                 "tests/test_resconv.py", "tests/test_ladder.py"], project)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "2 passed" in result.stdout


def test_its_pyproject_declares_the_builder_it_shows(project):
  with open(project / "pyproject.toml", "rb") as f:
    declared = tomllib.load(f)["project"]["entry-points"]["vae_engine.models"]
  assert declared == {"resconv": "myvaes.resconv:build"}


def test_its_builder_refuses_images_it_cannot_take_in_one_line(project,
                                                              small_mnist_dir):
  result = _run([sys.executable, "-m", "engine.main",
                 "--model=myvaes.resconv:build", "--image_size=30",
                 f"--data_dir={small_mnist_dir}",
                 f"--model_dir={project / 'runs' / 'odd'}"], project)
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert result.returncode == 2 and len(errors) == 1, result.stderr
  assert "multiples of 4" in errors[0] and "Traceback" not in result.stderr


@pytest.mark.slow
def test_its_command_trains_and_exports(project, small_mnist_dir):
  (command,) = [text for language, text in _blocks() if language == "sh"]
  command = command.replace("path/to/mnist", small_mnist_dir).replace(
      "/tmp/runs", str(project / "runs")).rstrip()
  result = _run(["bash", "-c", f"{command} --train_steps=30 "
                 "--checkpoint_every=0 --eval_every=0 --figures=false"],
                project)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "done: step 30" in result.stdout
  assert os.listdir(project / "runs" / "resconv" / "export")


@pytest.mark.slow
def test_its_python_runs_as_shown(project, small_mnist_dir):
  model_dir = project / "runs" / "python"
  script = (f"DATA_DIR = {small_mnist_dir!r}\nMODEL_DIR = {str(model_dir)!r}\n"
            + (project / "train.py").read_text())
  result = _run([sys.executable, "-c", script], project)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = result.stdout.strip().splitlines()
  assert printed[-1] == "--batch_size=-3: must be a positive number"
  step, elbo, export = printed[-2].split()
  assert step == "40" and float(elbo) < 0
  assert export.startswith(str(model_dir / "export"))


def test_its_hierarchical_builder_trains_on_the_iwae_bound(project,
                                                           small_mnist_dir):
  result = _run([sys.executable, "-m", "engine.main",
                 "--model=myvaes.ladder:build", "--objective=iwae",
                 "--iw_samples=5", "--binarize=dynamic", "--train_steps=20",
                 "--checkpoint_every=0", "--nofigures",
                 f"--data_dir={small_mnist_dir}",
                 f"--model_dir={project / 'runs' / 'ladder'}"], project)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "done: step 20" in result.stdout
  assert "active units (z1 " in result.stdout
