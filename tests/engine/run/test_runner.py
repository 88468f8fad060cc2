"""End-to-end runs in-process on real MNIST (a subset, for speed)."""

import functools
import dataclasses
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import models
from engine.run import build
from engine.run import runner
from engine.io import summaries
from engine.config import RunConfig
from engine.errors import CheckpointMismatchError, UserError
from tests import helpers

pytestmark = pytest.mark.e2e


_config = functools.partial(helpers.run_config, **helpers.SHORT_RUN)



@pytest.mark.parametrize("model", sorted(models.names()))
def test_every_model_trains_and_its_loss_falls(small_mnist_dir, tmp_path,
                                               model):
  config = _config(small_mnist_dir, tmp_path, model, train_steps=160,
                   log_every=40, checkpoint_every=0, learning_rate=2e-3)
  result = runner.run(config, stream=io.StringIO())
  train = summaries.read_metrics(str(tmp_path))["train"]
  first, last = train[40]["loss"], train[160]["loss"]
  assert last < first - 20, (first, last)
  assert result.final_step == 160
  assert -last < 0 and np.isfinite(result.test_metrics["elbo"])
  assert result.test_metrics["elbo"] > -300


def test_run_writes_checkpoints_summaries_config_and_prints_test_elbo(
    small_mnist_dir, tmp_path):
  stream = io.StringIO()
  config = _config(small_mnist_dir, tmp_path, eval_every=20)
  result = runner.run(config, stream=stream)
  output = stream.getvalue()
  assert "step 10/40 [#####" in output and "ex/s" in output
  assert "eval step 20: test ELBO" in output and "over 512 test images" in output
  assert f"test ELBO {result.test_metrics['elbo']:.2f} nats" in output
  assert result.checkpoint.endswith("ckpt-40")
  assert os.path.exists(os.path.join(tmp_path, "ckpt-20.index"))
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(tmp_path / "train"))
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(tmp_path / "eval"))
  saved = json.loads((tmp_path / "config.json").read_text())
  assert RunConfig.from_dict(saved) == config
  assert "--model=dense\n" in (tmp_path / "flags.txt").read_text()
  evals = summaries.read_metrics(str(tmp_path))["eval"]
  assert sorted(evals) == [20, 40]
  tags = set()
  for name in os.listdir(tmp_path / "eval"):
    for event in tf.compat.v1.train.summary_iterator(
        str(tmp_path / "eval" / name)):
      tags.update(value.tag for value in event.summary.value)
  assert {"elbo", "reconstruction", "kl", "inputs_vs_reconstructions",
          "prior_samples"} <= tags


def test_resume_is_bit_identical_to_an_uninterrupted_run(small_mnist_dir,
                                                         tmp_path):
  whole = tmp_path / "whole"
  runner.run(_config(small_mnist_dir, whole, "conv"), stream=io.StringIO())
  split = tmp_path / "split"
  first = runner.run(_config(small_mnist_dir, split, "conv", train_steps=23),
                     stream=io.StringIO())
  assert first.final_step == 23
  second = runner.run(_config(small_mnist_dir, split, "conv"),
                      stream=io.StringIO())
  assert second.resumed_from.endswith("ckpt-23")
  a, b = helpers.checkpointed_state(str(whole)), helpers.checkpointed_state(str(split))
  assert a.keys() == b.keys() and len(a) > 30
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  # The losses logged after the resume equal the uninterrupted run's.
  whole_train = summaries.read_metrics(str(whole))["train"]
  split_train = summaries.read_metrics(str(split))["train"]
  assert whole_train[40]["loss"] == split_train[40]["loss"]


def test_dynamic_binarization_and_noise_resume_exactly(small_mnist_dir,
                                                       tmp_path):
  def config(model_dir, steps):
    base = _config(small_mnist_dir, model_dir, "denoising", train_steps=steps)
    return dataclasses.replace(
        base, data=dataclasses.replace(base.data, binarize="dynamic"))
  runner.run(config(tmp_path / "a", 30), stream=io.StringIO())
  runner.run(config(tmp_path / "b", 11), stream=io.StringIO())
  runner.run(config(tmp_path / "b", 30), stream=io.StringIO())
  a = helpers.checkpointed_state(str(tmp_path / "a"))
  b = helpers.checkpointed_state(str(tmp_path / "b"))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_xla_runs_build_batches_in_the_loop_and_resume_exactly(
    small_mnist_dir, tmp_path):
  """--jit_compile on one device trains from `StepBatches`: a resumed run is
  bit-identical, and it sees the plain run's batches (losses agree)."""
  def config(model_dir, steps, **train):
    base = _config(small_mnist_dir, model_dir, "dense", train_steps=steps,
                   **train)
    return dataclasses.replace(
        base, data=dataclasses.replace(base.data, binarize="dynamic"))
  runner.run(config(tmp_path / "a", 30, jit_compile=True),
             stream=io.StringIO())
  runner.run(config(tmp_path / "b", 11, jit_compile=True),
             stream=io.StringIO())
  runner.run(config(tmp_path / "b", 30, jit_compile=True),
             stream=io.StringIO())
  # Without XLA the batches come from the tf.data pipeline: the losses
  # agreeing says the loop's batches are those.
  runner.run(config(tmp_path / "plain", 30, jit_compile=False),
             stream=io.StringIO())
  a = helpers.checkpointed_state(str(tmp_path / "a"))
  b = helpers.checkpointed_state(str(tmp_path / "b"))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  xla = summaries.read_metrics(str(tmp_path / "a"))["train"][30]["loss"]
  plain = summaries.read_metrics(str(tmp_path / "plain"))["train"][30]["loss"]
  np.testing.assert_allclose(xla, plain, rtol=1e-4)


def test_another_models_checkpoint_is_refused(small_mnist_dir, tmp_path):
  # A run made to have a checkpoint to refuse (the refusals come before any
  # step is compiled), so not compiled with XLA.
  runner.run(_config(small_mnist_dir, tmp_path, "dense", train_steps=5,
                     jit_compile=False), stream=io.StringIO())
  with pytest.raises(CheckpointMismatchError,
                     match=r"holds a run trained with other settings "
                     r"\(--model=dense there, mlp here\)"):
    runner.run(_config(small_mnist_dir, tmp_path, "mlp", train_steps=5),
               stream=io.StringIO())
  other_latent = _config(small_mnist_dir, tmp_path, "dense", train_steps=5)
  other_latent = dataclasses.replace(
      other_latent, model=dataclasses.replace(other_latent.model,
                                              latent_dim=8))
  with pytest.raises(CheckpointMismatchError,
                     match="--latent_dim=2 there, 8 here"):
    runner.run(other_latent, stream=io.StringIO())
  # Without its config.json the checkpoint's own fingerprint still refuses.
  os.remove(tmp_path / "config.json")
  with pytest.raises(CheckpointMismatchError,
                     match=r"holds a checkpoint of another model "
                     r"\(model=dense;latent_dim=2.*this run is model=mlp"):
    runner.run(_config(small_mnist_dir, tmp_path, "mlp", train_steps=5),
               stream=io.StringIO())


def test_foreign_checkpoint_is_refused(small_mnist_dir, tmp_path):
  checkpoint = tf.train.Checkpoint(step=tf.Variable(3))
  tf.train.CheckpointManager(checkpoint, str(tmp_path), 1).save()
  with pytest.raises(CheckpointMismatchError, match="not written by "
                     "vae-engine"):
    runner.run(_config(small_mnist_dir, tmp_path, train_steps=5),
               stream=io.StringIO())


def test_batch_larger_than_dataset(small_mnist_dir, tmp_path):
  with pytest.raises(UserError, match="--batch_size=4096: larger than"):
    runner.run(_config(small_mnist_dir, tmp_path, batch_size=4096),
               stream=io.StringIO())


def test_unwritable_model_dir(small_mnist_dir, tmp_path):
  if os.geteuid() == 0:
    target = "/proc/vae_engine_cannot_write_here"
  else:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    target = str(read_only / "run")
  with pytest.raises(UserError, match="--model_dir=.*not writable"):
    runner.run(_config(small_mnist_dir, target, train_steps=5),
               stream=io.StringIO())


def test_epochs_set_the_length(small_mnist_dir, tmp_path):
  config = _config(small_mnist_dir, tmp_path, train_steps=None, epochs=1,
                   batch_size=256, log_every=4, jit_compile=False)
  assert runner.run(config, stream=io.StringIO()).final_step == 2048 // 256


def test_a_resumed_run_uses_its_own_learning_rate(small_mnist_dir, tmp_path):
  """Keras checkpoints the learning rate; the new flag must still win."""
  runner.run(_config(small_mnist_dir, tmp_path, train_steps=20,
                     learning_rate=1e-3, jit_compile=False),
             stream=io.StringIO())
  parts = build.build(_config(small_mnist_dir, tmp_path, train_steps=40,
                              learning_rate=2e-4, jit_compile=False))
  assert parts.resumed_from.endswith("ckpt-20")
  assert parts.trainer.learning_rate_now() == pytest.approx(2e-4)
