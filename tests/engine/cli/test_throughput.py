"""tools/throughput.py measures real training steps."""

import pytest

from engine.cli import throughput

pytestmark = pytest.mark.e2e


def test_measures_each_setting(small_mnist_dir):
  from engine.config import DataConfig
  from engine.data import sources
  data = sources.load(DataConfig(data_dir=small_mnist_dir))
  rates = throughput.measure("dense", data, batch_size=32,
                             steps_per_loop_values=[1, 4], steps=8, rounds=2)
  assert set(rates) == {1, 4}
  assert all(len(r) == 2 and all(x > 0 for x in r) for r in rates.values())
