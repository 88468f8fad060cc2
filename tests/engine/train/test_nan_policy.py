"""--nan_policy: a non-finite loss never reaches the weights; `stop` names the
step and the term and keeps the last good checkpoint, `skip` skips and counts."""

import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from tests.engine.train.trainers import make_trainer
from engine.io import run_dir
from engine.config import ModelConfig
from engine.data import pipeline
from engine.data import step_batches
from tests.helpers import assert_one_line_error, run_cli
from tests.helpers import run_in_process


def _trainer(**kwargs):
  keras.utils.set_random_seed(0)
  vae = models.get("dense").build((28, 28, 1), 2)
  return make_trainer(vae, ModelConfig(name="dense", latent_dim=2),
                       tf.distribute.get_strategy(), 16, 1e-3, **kwargs)


def _batches(mnist, indices, poisoned=()):
  """The pipeline's batches `indices`, with NaN targets in `poisoned` ones."""
  options = pipeline.PipelineOptions(16, 0, "none", 0.0, 2)
  images = pipeline.as_tensor(mnist.train_images[:512])
  batches = []
  for index in indices:
    batch = next(iter(pipeline.train_dataset(images, options, index,
                                             index + 1)))
    if index in poisoned:
      batch["targets"] = batch["targets"] * np.nan
    batches.append(batch)
  return iter(tf.data.Dataset.from_tensor_slices(
      {k: tf.stack([b[k] for b in batches]) for k in batches[0]}))


def _optimizer(trainer):
  return trainer.checkpoint_items()["optimizer"]


def _weights(trainer):
  return [v.numpy().copy() for v in trainer.vae.trainable_variables]


@pytest.mark.e2e
@pytest.mark.parametrize("jit_compile", [False, True])
def test_stop_ends_the_loop_at_the_bad_step_without_applying_it(mnist,
                                                                jit_compile):
  reference = _trainer(jit_compile=jit_compile)
  reference.train_loop(_batches(mnist, range(3)), tf.constant(3))
  trainer = _trainer(jit_compile=jit_compile)
  outputs = trainer.train(6, _batches(mnist, range(6), poisoned={3}))
  guard = outputs.guard
  assert guard.stop_cause == "non_finite"
  assert outputs.step == 4  # Steps 0-2 applied, 3 consumed.
  assert guard.last_bad_step == 3
  assert guard.bad_terms == ("reconstruction", "gradients")  # Not the KL.
  for a, b in zip(_weights(reference), _weights(trainer)):
    np.testing.assert_array_equal(a, b)
  assert outputs.examples == 3 * 16 and np.isfinite(outputs.sums["loss"])


@pytest.mark.e2e
@pytest.mark.parametrize("jit_compile", [False, True])
def test_skip_drops_the_bad_update_and_carries_on(mnist, jit_compile):
  reference = _trainer(nan_policy="skip", jit_compile=jit_compile)
  reference.train_loop(_batches(mnist, [0, 1, 2, 4, 5]), tf.constant(5))
  trainer = _trainer(nan_policy="skip", jit_compile=jit_compile)
  outputs = trainer.train(6, _batches(mnist, range(6), poisoned={3}))
  assert not outputs.stopped
  assert outputs.step == 6
  assert outputs.guard.skipped == {"non_finite": 1, "gradient_norm": 0}
  assert int(_optimizer(trainer).iterations) == 5
  # Exactly as if the bad batch had never been there.
  for a, b in zip(_weights(reference), _weights(trainer)):
    np.testing.assert_array_equal(a, b)
  assert outputs.examples == 5 * 16


class _PoisonedStepBatches(step_batches.StepBatches):
  """`StepBatches` whose targets are NaN at the `poisoned` trainer_lib."""

  def __init__(self, mnist, poisoned, steps_per_call):
    super().__init__(pipeline.as_tensor(mnist.train_images[:512]),
                     pipeline.PipelineOptions(16, 0, "none", 0.0, 2),
                     steps_per_call)
    self.poisoned = tf.constant(sorted(poisoned) or [-1], tf.int64)

  def draw(self, first_step):
    draws = super().draw(first_step)
    draws["step"] = (tf.cast(first_step, tf.int64)
                     + tf.range(self.steps_per_call, dtype=tf.int64))
    return draws

  def batch(self, draws):
    batch = super().batch(draws)
    bad = tf.reduce_any(tf.equal(draws["step"], self.poisoned))
    batch["targets"] = tf.where(bad, batch["targets"] * np.nan,
                                batch["targets"])
    return batch


@pytest.mark.e2e
@pytest.mark.parametrize("nan_policy", ["stop", "skip"])
def test_the_on_device_loop_guards_and_stops_inside_xla(mnist, nan_policy):
  """Steps 0-1 run in one XLA call, 2-3 in the next: the bad step 3 ends
  (`stop`) or is skipped in the middle of the compiled loop."""
  reference = _trainer(jit_compile=True, nan_policy=nan_policy)
  reference.train_loop(_PoisonedStepBatches(mnist, (), 2), tf.constant(3))
  trainer = _trainer(jit_compile=True, nan_policy=nan_policy)
  outputs = trainer.train(6, _PoisonedStepBatches(mnist, {3}, 2))
  assert outputs.guard.last_bad_step == 3
  if nan_policy == "stop":
    assert outputs.guard.stop_cause == "non_finite"
    assert outputs.step == 4
    for a, b in zip(_weights(reference), _weights(trainer)):
      np.testing.assert_array_equal(a, b)
  else:
    assert not outputs.stopped
    assert outputs.step == 6
    assert int(_optimizer(trainer).iterations) == 5
    assert outputs.guard.skipped["non_finite"] == 1
    assert all(np.isfinite(w).all() for w in _weights(trainer))


@pytest.mark.e2e
def test_skip_stops_after_too_many_in_a_row(mnist):
  trainer = _trainer(nan_policy="skip", max_skipped_steps=3)
  outputs = trainer.train(8, _batches(mnist, range(8), poisoned={1, 3, 4, 5}))
  assert outputs.guard.stop_cause == "non_finite"
  assert outputs.step == 6  # Stopped after step 5, the third.
  assert outputs.guard.skipped["non_finite"] == 4
  assert outputs.guard.first_bad_step == 1
  assert all(np.isfinite(w).all() for w in _weights(trainer))


def _common(data_dir, model_dir):
  return [f"--data_dir={data_dir}", f"--model_dir={model_dir}",
          "--model=dense", "--batch_size=64", "--steps_per_loop=5",
          "--log_every=10", "--checkpoint_every=20", "--nofigures",
          "--optimizer=sgd"]


@pytest.fixture(scope="module")
def _good_run(tmp_path_factory, small_mnist_dir):
  """20 good steps with a checkpoint at 20, trained once for the module."""
  model_dir = tmp_path_factory.mktemp("good_run") / "run"
  result = run_in_process(*_common(small_mnist_dir, model_dir),
                          "--train_steps=20", "--learning_rate=0.01")
  assert result.returncode == 0, result.stderr
  return model_dir


@pytest.fixture
def good_run(_good_run, tmp_path, small_mnist_dir):
  """A copy of the good run in the test's own directory (a copy is that
  run: checkpoints are found by their files, and a moved --model_dir is not
  a change of the run's settings), and the flags that resume it."""
  model_dir = tmp_path / "run"
  shutil.copytree(_good_run, model_dir)
  return model_dir, _common(small_mnist_dir, model_dir)


def _assert_checkpoint_20_is_intact(model_dir):
  assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-20")
  trained = run_dir.load_trained_model(str(model_dir))
  assert trained.step == 20
  assert all(np.isfinite(v.numpy()).all()
             for v in trained.vae.encoder.trainable_variables)


@pytest.mark.e2e
@pytest.mark.xdist_group("nan_policy_good_run")
def test_divergence_stops_with_the_step_and_term_and_keeps_the_checkpoint(
    good_run):
  model_dir, common = good_run
  result = run_in_process(*common, "--train_steps=60", "--learning_rate=1e4")
  assert result.returncode == 3
  line = assert_one_line_error(result, "training stopped at step",
                               "non-finite", "ckpt-20", "--nan_policy=skip")
  assert "term" in line or "gradients" in line
  assert not [p for p in os.listdir(model_dir) if p.startswith("ckpt-")
              and not p.startswith("ckpt-20")]
  _assert_checkpoint_20_is_intact(model_dir)


@pytest.mark.e2e
@pytest.mark.xdist_group("nan_policy_good_run")
def test_divergence_with_skip_stops_after_the_limit(good_run):
  model_dir, common = good_run
  result = run_in_process(*common, "--train_steps=60", "--learning_rate=1e4",
                          "--nan_policy=skip", "--max_skipped_steps=4")
  assert result.returncode == 3
  assert_one_line_error(result, "4 steps in a row were non-finite",
                        "ckpt-20")
  _assert_checkpoint_20_is_intact(model_dir)


@pytest.mark.e2e
def test_mirrored_replicas_agree_to_stop(tmp_path, small_mnist_dir):
  # A new run with the good run's flags (it never reads the good run).
  common = _common(small_mnist_dir, f"{tmp_path}/mirrored")
  result = run_cli(*common, "--strategy=mirrored",
                   "--cpu_devices=2", "--train_steps=40",
                   "--learning_rate=1e4")
  assert result.returncode == 3, result.stderr
  assert_one_line_error(result, "training stopped at step", "non-finite",
                        "no checkpoint was written")
