"""The test tiers keep their promise (tests/conftest.py): a test is `unit`
unless marked `e2e` or `slow`, and a unit test, or a fixture it sets up,
that starts a process or a whole run fails with a line saying how to mark
it."""

import os

import pytest

from tests.helpers import REPO_ROOT

pytest_plugins = ["pytester"]

# The outer test lets the inner session start a process (its e2e case).
pytestmark = pytest.mark.e2e

_TESTS = '''
import subprocess
import sys

import pytest


@pytest.fixture
def spawned():
  subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_in_process():
  assert True


def test_starts_a_process():
  subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_needs_a_fixture_that_starts_one(spawned):
  assert True


def test_trains_a_whole_run():
  from engine.run import runner
  runner.run(None)


@pytest.mark.e2e
def test_marked_e2e_starts_a_process():
  subprocess.run([sys.executable, "-c", "pass"], check=True)


@pytest.mark.slow
def test_marked_slow_is_e2e_too():
  subprocess.run([sys.executable, "-c", "pass"], check=True)
'''


def test_unit_tests_that_leave_the_process_fail_and_say_how_to_mark_them(
    pytester):
  with open(os.path.join(REPO_ROOT, "tests", "conftest.py"),
            encoding="utf-8") as f:
    pytester.makeconftest(f.read())
  pytester.makepyfile(test_tiers_inner=_TESTS)
  result = pytester.runpytest_inprocess("-p", "no:xdist", "-p",
                                        "no:randomly")
  result.assert_outcomes(passed=3, failed=2, errors=1)
  result.stdout.fnmatch_lines([
      "*test_starts_a_process is in the unit tier but starts a process: "
      "mark it (or its module) `pytest.mark.e2e`*",
      "*test_trains_a_whole_run is in the unit tier but trains a whole run*",
  ], consecutive=False)
  assert "test_needs_a_fixture_that_starts_one is in the unit tier" in (
      result.stdout.str())


def test_the_unit_tier_selects_only_unmarked_tests(pytester):
  with open(os.path.join(REPO_ROOT, "tests", "conftest.py"),
            encoding="utf-8") as f:
    pytester.makeconftest(f.read())
  pytester.makepyfile(test_tiers_inner=_TESTS)
  result = pytester.runpytest_inprocess("-p", "no:xdist", "-m", "e2e",
                                        "--collect-only", "-q")
  result.stdout.fnmatch_lines(["*test_marked_e2e_starts_a_process",
                               "*test_marked_slow_is_e2e_too",
                               "2/6 tests collected*"])


_GROUPED = '''
import os

import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.fixture(scope="session")
def expensive():
  # One file per build of the fixture: the grouping's whole point.
  open(os.path.join({builds!r}, str(os.getpid())), "w").close()


@pytest.mark.parametrize("case", range(8))
def test_uses_the_expensive_fixture(expensive, case):
  assert True
'''


def test_a_group_of_tests_shares_one_worker_and_its_session_fixtures(
    pytester, tmp_path):
  """`make test` runs `--dist loadgroup` so that modules sharing a costly
  session fixture (tests/engine/serving) build it once. pytest 9.2 made
  pytest-xdist's grouping a silent no-op (pytest-dev/pytest-xdist#1386),
  which built the serving exports on both workers: setup.py keeps pytest
  below it, and this fails if grouping breaks again."""
  builds = tmp_path / "builds"
  builds.mkdir()
  pytester.makepyfile(test_grouped=_GROUPED.format(builds=str(builds)))
  result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup",
                                         "-p", "no:cacheprovider", "-v")
  result.assert_outcomes(passed=8)
  assert "test_uses_the_expensive_fixture[0]@shared" in result.stdout.str()
  assert len(os.listdir(builds)) == 1, os.listdir(builds)
