"""`--mixed_precision=auto` chooses by measuring, and keeps its choice."""

import io
import json
import os

import pytest
import tensorflow as tf

import models
from engine.data import pipeline
from engine.data import sources
from engine.devices import precision
from engine.run import autotune
from engine.run import runner
from tests import helpers

# A CPU with bfloat16 units: float32 and mixed_bfloat16 are measured.
BF16_CPU = precision.Hardware(cpu_flags=frozenset({"avx512_bf16"}))
PLAIN_CPU = precision.Hardware(cpu_flags=frozenset({"avx2"}))


def _config(data_dir, model_dir, policy="auto", model="dense", **train):
  return helpers.run_config(
      data_dir, model_dir, model, data={"max_train_examples": 256},
      **{"batch_size": 32, "train_steps": 4, "steps_per_loop": 2,
         "log_every": 2, "checkpoint_every": 0, "mixed_precision": policy,
         **train})



def _fake_rates(monkeypatch, rates):
  measured = []

  def measure(policy, *args):
    measured.append(policy)
    return rates[policy]
  monkeypatch.setattr(autotune, "_measure", measure)
  return measured


def _choose(config, hardware=BF16_CPU, **kwargs):
  return autotune.choose(config, create=None, images=None, labels=None,
                         num_train=256, strategy=tf.distribute.get_strategy(),
                         is_chief=True, hardware=hardware, **kwargs)


@pytest.mark.parametrize("bf16_rate,expected", [
    (1000.0, "float32"),         # Slower: never chosen.
    (1040.0, "float32"),         # Within the margin: noise, not a gain.
    (1060.0, "mixed_bfloat16"),  # Beyond it.
])
def test_a_policy_must_beat_float32_by_the_margin(tmp_path, monkeypatch,
                                                  bf16_rate, expected):
  _fake_rates(monkeypatch, {"float32": 1000.0, "mixed_bfloat16": bf16_rate})
  choice = _choose(_config(None, tmp_path))
  assert choice.policy == expected
  assert f"{1000.0 / 1000.0 if expected == 'float32' else 1.06:.2f}x" in (
      choice.reason)
  assert "float32 1,000" in choice.reason


def test_the_choice_is_kept_and_remeasured_only_for_another_setup(
    tmp_path, monkeypatch):
  measured = _fake_rates(monkeypatch,
                         {"float32": 1000.0, "mixed_bfloat16": 1500.0})
  config = _config(None, tmp_path)
  assert _choose(config).policy == "mixed_bfloat16"
  kept = json.load(open(tmp_path / autotune.AUTOTUNE_JSON))
  assert kept["policy"] == "mixed_bfloat16"
  assert kept["rates"] == {"float32": 1000.0, "mixed_bfloat16": 1500.0}
  assert measured == ["float32", "mixed_bfloat16"]

  again = _choose(config)
  assert again.policy == "mixed_bfloat16"
  assert "kept from autotune.json" in again.reason
  assert len(measured) == 2  # Not measured again.

  # Another batch size is another measurement.
  _fake_rates(monkeypatch, {"float32": 1000.0, "mixed_bfloat16": 900.0})
  assert _choose(_config(None, tmp_path, batch_size=64)).policy == "float32"


def test_nothing_is_measured_without_reduced_precision_units(tmp_path,
                                                             monkeypatch):
  measured = _fake_rates(monkeypatch, {})
  choice = _choose(_config(None, tmp_path), hardware=PLAIN_CPU)
  assert choice.policy == "float32" and "nothing to measure" in choice.reason
  assert measured == [] and not os.path.exists(
      tmp_path / autotune.AUTOTUNE_JSON)


@pytest.mark.e2e
def test_measuring_trains_each_candidate_for_real(small_mnist_dir, tmp_path):
  """A real measurement: both candidates train (bfloat16 runs on any x86
  CPU, slowly where it has no units) and report positive rates."""
  config = _config(small_mnist_dir, tmp_path)
  data = sources.load(config.data, 0)

  def create():
    return models.get("dense").create(image_shape=data.image_shape,
                                      latent_dim=config.model.latent_dim)
  choice = autotune.choose(
      config, create, pipeline.as_tensor(data.train_images), None,
      len(data.train_images), tf.distribute.get_strategy(), True,
      seconds=0.2, hardware=BF16_CPU)
  rates = json.load(open(tmp_path / autotune.AUTOTUNE_JSON))["rates"]
  assert set(rates) == {"float32", "mixed_bfloat16"}
  assert all(rate > 0 for rate in rates.values())
  assert choice.policy in rates


@pytest.mark.e2e
def test_a_run_records_its_choice_and_a_resumed_run_keeps_it(
    small_mnist_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(precision, "detect_hardware", lambda: BF16_CPU)
  _fake_rates(monkeypatch, {"float32": 1000.0, "mixed_bfloat16": 1300.0})
  stream = io.StringIO()
  runner.run(_config(small_mnist_dir, tmp_path), stream=stream)
  assert ("mixed_bfloat16 (auto: measured 1.30x float32 (float32 1,000, "
          "mixed_bfloat16 1,300 ex/s") in stream.getvalue()
  written = json.load(open(tmp_path / "config.json"))
  assert written["train"]["mixed_precision"] == "mixed_bfloat16"

  # Resumed: the kept choice, even where a new measurement would differ.
  _fake_rates(monkeypatch, {"float32": 1000.0, "mixed_bfloat16": 500.0})
  stream = io.StringIO()
  runner.run(_config(small_mnist_dir, tmp_path, train_steps=6),
             stream=stream)
  assert "mixed_bfloat16 (auto: measured 1.30x" in stream.getvalue()
  assert "kept from autotune.json" in stream.getvalue()
