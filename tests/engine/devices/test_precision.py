"""Precision policies, loss scaling, XLA, and tracing of the training loop."""

import io
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from tests.engine.train.trainers import make_trainer
from engine.devices import precision
from engine.run import runner
from engine.io import summaries
from engine.config import ModelConfig
from engine.data import pipeline
from engine.data import step_batches
from tests import helpers
from tests.helpers import REPO_ROOT


def _config(data_dir, model_dir, model, policy, **train):
  # float16 on this CPU is slow but must still work (allow_slow).
  return helpers.run_config(
      data_dir, model_dir, model, data={"max_train_examples": 256},
      **{"batch_size": 32, "train_steps": 4, "steps_per_loop": 2,
         "log_every": 2, "checkpoint_every": 0, "mixed_precision": policy,
         "allow_slow": True, **train})



@pytest.mark.e2e
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("model", sorted(models.names()))
def test_every_policy_trains_every_model(small_mnist_dir, tmp_path, policy,
                                         model):
  result = runner.run(_config(small_mnist_dir, tmp_path, model, policy),
                      stream=io.StringIO())
  train = summaries.read_metrics(str(tmp_path))["train"]
  assert all(np.isfinite(m["loss"]) for m in train.values())
  assert np.isfinite(result.test_metrics["elbo"])


@pytest.mark.e2e
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_policies_train_in_the_on_device_xla_loop(small_mnist_dir,
                                                        tmp_path, policy):
  result = runner.run(_config(small_mnist_dir, tmp_path, "dense", policy,
                              jit_compile=True, train_steps=6),
                      stream=io.StringIO())
  train = summaries.read_metrics(str(tmp_path))["train"]
  assert all(np.isfinite(m["loss"]) for m in train.values())
  assert np.isfinite(result.test_metrics["elbo"])


def test_policy_scope_builds_mixed_layers_with_float32_outputs():
  with precision.policy_scope("mixed_bfloat16"):
    vae = models.get("conv").build((28, 28, 1), 2)
  assert keras.mixed_precision.dtype_policy().name == "float32"  # Restored.
  images, epsilon = tf.zeros([2, 28, 28, 1]), tf.zeros([2, 2])
  z_mean, _, z = vae.encoder([images, epsilon])
  assert z_mean.dtype == tf.bfloat16 and z.dtype == tf.bfloat16
  assert vae.decoder(z).dtype == tf.float32  # Logits stay float32.
  assert all(v.dtype == "float32" for v in vae.trainable_variables)


_XEON_AVX512_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16", "fma"})
_SAPPHIRE_RAPIDS = _XEON_AVX512_BF16 | {"amx_bf16", "amx_tile", "amx_int8"}


@pytest.mark.parametrize("hardware,policy,reason", [
    (precision.Hardware(tpu=True, cpu_flags=_XEON_AVX512_BF16),
     "mixed_bfloat16", "TPU"),
    (precision.Hardware(gpu_capabilities=((9, 0),)), "mixed_bfloat16",
     "compute capability 9.0"),
    (precision.Hardware(gpu_capabilities=((8, 0), (8, 0))), "mixed_bfloat16",
     "bfloat16 tensor cores"),
    (precision.Hardware(gpu_capabilities=((7, 5),), cpu_flags=_SAPPHIRE_RAPIDS),
     "mixed_float16", "float16 tensor cores only"),
    (precision.Hardware(gpu_capabilities=((8, 6), (7, 0))), "mixed_float16",
     "compute capability 7.0"),  # The slowest GPU decides.
    (precision.Hardware(gpu_capabilities=((6, 1),)), "float32",
     "no tensor cores"),
    (precision.Hardware(cpu_flags=_SAPPHIRE_RAPIDS), "mixed_bfloat16", "AMX"),
    # AVX512-BF16 without AMX: bf16 measured slower than float32 (conv
    # 0.65x, dense 0.83x), so never bf16 there.
    (precision.Hardware(cpu_flags=_XEON_AVX512_BF16), "float32",
     "AVX512-BF16 but no AMX"),
    (precision.Hardware(cpu_flags=frozenset({"avx2", "fma"})), "float32",
     "without bfloat16"),
    (precision.Hardware(cpu_flags=frozenset({"amx_tile"})), "float32",
     "without bfloat16"),  # AMX without its bf16 unit.
    (precision.Hardware(), "float32", "without bfloat16"),
])
def test_auto_decision_table(hardware, policy, reason):
  choice = precision.resolve("auto", hardware=hardware)
  assert choice.policy == policy
  assert reason in choice.reason
  assert choice.describe() == f"{policy} (auto: {choice.reason})"


def test_explicit_policies_are_taken_as_given():
  for name in ("float32", "mixed_bfloat16"):
    choice = precision.resolve(name, hardware=precision.Hardware(
        cpu_flags=_SAPPHIRE_RAPIDS))
    assert choice == precision.Choice(name) and choice.describe() == name


def test_this_machine_is_detected_and_decided():
  hardware = precision.detect_hardware()
  assert precision.resolve("auto").policy == precision.choose(hardware).policy
  assert precision.choose(hardware).policy in precision.POLICIES


@pytest.mark.e2e
def test_the_start_line_says_what_auto_measured(small_mnist_dir, tmp_path):
  """A run's `auto` measures this machine's candidates (engine.run.autotune
  tests the choice itself); the start line gives the outcome."""
  stream = io.StringIO()
  # Without XLA: the measured candidates and the run itself skip its
  # compiles, and what `auto` chooses and shows does not depend on it.
  runner.run(_config(small_mnist_dir, tmp_path, "dense", "auto",
                     train_steps=1, jit_compile=False), stream=stream)
  start = stream.getvalue().splitlines()[0]
  if len(precision.candidates(precision.detect_hardware())) == 1:
    assert "1 replica(s), float32 (auto: nothing to measure" in start
  else:
    kept = json.loads((tmp_path / "autotune.json").read_text())
    assert f"1 replica(s), {kept['policy']} (auto: measured " in start


def _trainer(policy, loss_scaling=False, jit_compile=False, model="dense"):
  keras.utils.set_random_seed(0)
  with precision.policy_scope(policy):
    vae = models.get(model).build((28, 28, 1), 2)
  return make_trainer(vae, ModelConfig(name=model, latent_dim=2),
                       tf.distribute.get_strategy(), 16, 1e-3,
                       loss_scaling=loss_scaling, jit_compile=jit_compile)


def _batches(mnist, count, poison=None):
  options = pipeline.PipelineOptions(16, 0, "none", 0.0, 2)
  dataset = pipeline.train_dataset(pipeline.as_tensor(
      mnist.train_images[:512]), options, 0, count)
  if poison is not None:
    def maybe_poison(index, batch):
      bad = tf.equal(index, poison)
      batch["inputs"] = tf.where(bad, batch["inputs"] * np.nan,
                                 batch["inputs"])
      return batch
    dataset = dataset.enumerate().map(maybe_poison)
  return iter(dataset)


@pytest.mark.e2e
def test_float16_loss_scaling_skips_an_overflowing_step_and_recovers(mnist):
  trainer = _trainer("mixed_float16", loss_scaling=True)
  iterator = _batches(mnist, 6)
  weights = lambda: [v.numpy().copy() for v in trainer.vae.trainable_variables]  # noqa: E731
  trainer.train_loop(iterator, tf.constant(2))
  before = weights()
  # A scale this large overflows float16 in the backward pass: gradients
  # come out inf while the (unscaled, float32) loss is finite.
  trainer.optimizer.dynamic_scale.assign(2.0 ** 40)
  outputs = trainer.train(1, batches=iterator)
  for a, b in zip(before, weights()):
    np.testing.assert_array_equal(a, b)  # Skipped.
  assert float(trainer.optimizer.dynamic_scale) == 2.0 ** 39
  # Routine for float16: not a non-finite *loss*, so --nan_policy is silent.
  assert not outputs.stopped
  assert outputs.guard.skipped == {"non_finite": 0, "gradient_norm": 0}
  trainer.optimizer.dynamic_scale.assign(2.0 ** 10)
  trainer.train_loop(iterator, tf.constant(3))
  after = weights()
  assert all(np.isfinite(w).all() for w in after)
  assert any(not np.array_equal(a, b) for a, b in zip(before, after))
  assert int(trainer.optimizer.iterations) == 5  # 6 batches, 1 skipped.


@pytest.mark.e2e
@pytest.mark.parametrize("model", ["dense", "conv"])
def test_xla_and_plain_steps_agree(mnist, model):
  """One device: XLA compiles the whole step, optimizer update included."""
  plain = _trainer("float32", model=model)
  xla = _trainer("float32", jit_compile=True, model=model)
  assert xla.whole_step_xla and not plain.whole_step_xla
  # XLA:CPU is slow at convolution gradients inside a compiled loop.
  assert xla.loops_on_device == (model == "dense")
  for a, b in zip(plain.vae.trainable_variables, xla.vae.trainable_variables):
    b.assign(a)
  plain.train_loop(_batches(mnist, 1), tf.constant(1))
  xla.train_loop(_batches(mnist, 1), tf.constant(1))
  assert xla._replica_step.experimental_get_tracing_count() == 1
  np.testing.assert_allclose(plain.metrics.result_and_reset()["loss"],
                             xla.metrics.result_and_reset()["loss"],
                             rtol=1e-4)
  for a, b in zip(plain.vae.trainable_variables, xla.vae.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.e2e
def test_xla_gradients_agree_under_a_strategy(mnist):
  """Under tf.distribute only forward and backward are compiled."""
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    keras.utils.set_random_seed(0)
    vae = models.get("conv").build((28, 28, 1), 2)
    config = ModelConfig(name="conv", latent_dim=2)
    plain = make_trainer(vae, config, strategy, 16, 1e-3)
    xla = make_trainer(vae, config, strategy, 16, 1e-3, jit_compile=True)
  assert not xla.whole_step_xla
  batch = next(_batches(mnist, 1))
  plain_gradients, plain_terms = plain.gradients(batch)
  xla_gradients, xla_terms = xla.gradients(batch)
  np.testing.assert_allclose(plain_terms["loss"], xla_terms["loss"],
                             rtol=1e-4)
  for a, b in zip(plain_gradients, xla_gradients):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.e2e
def test_xla_run_trains(small_mnist_dir, tmp_path):
  result = runner.run(_config(small_mnist_dir, tmp_path, "conv", "float32",
                              jit_compile=True, train_steps=20),
                      stream=io.StringIO())
  assert np.isfinite(result.test_metrics["elbo"])


@pytest.mark.e2e
def test_the_loop_traces_once_whatever_the_step_count(mnist):
  trainer = _trainer("float32")
  iterator = _batches(mnist, 30)
  for count in (1, 7, 2, 10, 3):
    trainer.train_loop(iterator, tf.constant(count))
  assert trainer.train_loop.experimental_get_tracing_count() == 1
  assert int(trainer.global_step) == 23


@pytest.mark.e2e
@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_on_device_loop_trains_like_the_iterator_loop(mnist, jit_compile):
  """Fed by `StepBatches` (with XLA: many steps per XLA call), the loop takes
  the same steps as when tf.data feeds it one batch at a time, and traces
  once."""
  options = pipeline.PipelineOptions(16, 0, "dynamic", 0.0, 2)
  images = pipeline.as_tensor(mnist.train_images[:512])
  fed = _trainer("float32", jit_compile=jit_compile)
  on_device = _trainer("float32", jit_compile=jit_compile)
  assert on_device.loops_on_device
  iterator = iter(pipeline.train_dataset(images, options, 0, 23))
  source = step_batches.StepBatches(images, options, max_steps_per_call=4)
  for count in (1, 7, 2, 10, 3):  # Crosses the epoch boundary at step 32/16.
    fed.train_loop(iterator, tf.constant(count))
    on_device.train_loop(source, tf.constant(count))
  assert int(on_device.global_step) == 23
  assert on_device.train_loop.experimental_get_tracing_count() == 1
  assert on_device._device_steps.experimental_get_tracing_count() == 1
  np.testing.assert_allclose(on_device.metrics.result_and_reset()["loss"],
                             fed.metrics.result_and_reset()["loss"],
                             rtol=1e-5)
  for a, b in zip(fed.vae.trainable_variables,
                  on_device.vae.trainable_variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


_COMPILE_COUNT_SCRIPT = """
import numpy as np, tensorflow as tf, keras
import models
from tests.engine.train.trainers import make_trainer
from engine.config import ModelConfig
from engine.data import pipeline, step_batches
images = tf.constant(np.zeros((256, 28, 28, 1), np.uint8))
keras.utils.set_random_seed(0)
trainer = make_trainer(models.get("dense").build((28, 28, 1), 2),
                        ModelConfig(name="dense", latent_dim=2),
                        tf.distribute.get_strategy(), 16, 1e-3,
                        jit_compile=True)
source = step_batches.StepBatches(
    images, pipeline.PipelineOptions(16, 0, "none", 0.0, 2), 4)
for count in (5, 3, 7, 1):
  trainer.train_loop(source, tf.constant(count))
assert int(trainer.global_step) == 16
"""


@pytest.mark.e2e
def test_the_on_device_loop_compiles_once_whatever_the_step_count(tmp_path):
  """XLA compiles each module it runs: one dump of the loop's module means
  new step counts reuse the executable (a `tf.range` loop would not)."""
  dump = tmp_path / "xla"
  result = subprocess.run(
      [sys.executable, "-c", _COMPILE_COUNT_SCRIPT], cwd=REPO_ROOT,
      env=dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2",
               XLA_FLAGS=f"--xla_dump_to={dump}"),
      capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  compiled = [name for name in os.listdir(dump)
              if "_steps_on_device" in name
              and name.endswith("before_optimizations.txt")]
  assert len(compiled) == 1, compiled


def test_step_batches_are_refused_where_the_loop_is_fed_by_tf_data(mnist):
  options = pipeline.PipelineOptions(16, 0, "none", 0.0, 2)
  source = step_batches.StepBatches(
      pipeline.as_tensor(mnist.train_images[:64]), options, 4)
  conv_xla = _trainer("float32", jit_compile=True, model="conv")
  assert not conv_xla.loops_on_device  # On this CPU.
  with pytest.raises(ValueError, match="StepBatches need one device"):
    conv_xla.train_loop(source, tf.constant(1))


@pytest.mark.e2e
def test_checkpoints_restore_across_policies(small_mnist_dir, tmp_path):
  # Without XLA, which a checkpoint's contents do not depend on (a resume
  # under XLA: test_conditional's test_a_conditional_run_resumes_bit_exactly).
  for policy, steps_done in (("float32", 4), ("mixed_float16", 8),
                             ("mixed_bfloat16", 12), ("float32", 16)):
    result = runner.run(_config(small_mnist_dir, tmp_path, "dense", policy,
                                train_steps=steps_done, checkpoint_every=4,
                                jit_compile=False),
                        stream=io.StringIO())
    assert result.final_step == steps_done
    if steps_done > 4:
      assert result.resumed_from.endswith(f"ckpt-{steps_done - 4}")


def test_float16_without_a_gpu_needs_allow_slow():
  with pytest.raises(Exception, match="mixed_float16: no GPU here.*"
                     "mixed_bfloat16.*--allow_slow"):
    precision.resolve("mixed_float16", hardware=precision.Hardware())
  assert precision.resolve("mixed_float16", allow_slow=True).policy == (
      "mixed_float16")


@pytest.mark.skipif(bool(tf.config.list_logical_devices("GPU")),
                    reason="on a GPU, auto turns XLA on for every model")
@pytest.mark.parametrize("model,flag,shown", [
    ("dense", None, ", XLA (auto: no convolutions)"),
    ("conv", None, ", no XLA (auto: convolutions on a CPU)"),
    ("dense", False, ", no XLA,"),
    ("conv", True, ", XLA,"),
])
@pytest.mark.e2e
def test_jit_compile_auto_chooses_per_model_and_says_so(
    small_mnist_dir, tmp_path, model, flag, shown):
  """Unset, `--jit_compile` is XLA where `benchmark` measures it faster on
  a CPU (no convolutions); set, it is obeyed. The start line says which."""
  stream = io.StringIO()
  runner.run(_config(small_mnist_dir, tmp_path, model, "float32",
                     jit_compile=flag, train_steps=2),
             stream=stream)
  start = stream.getvalue().splitlines()[0]
  assert shown in start + ",", start
  if flag is not None:
    assert "(auto: " not in start.split("float32", 1)[1]
