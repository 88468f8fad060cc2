"""Fixtures shared by the engine's test modules."""

import pytest


@pytest.fixture(scope="session")
def served(tmp_path_factory, small_mnist_dir):
  """A briefly trained export of each kind, its feeds, and every runtime's
  outcomes on them (tests/engine/serving/exports.py). Built once per worker:
  the modules using it share the xdist group "serving"."""
  from tests.engine.serving import exports
  return exports.build(tmp_path_factory.mktemp("serving"), small_mnist_dir)
