"""--conditional through the engine: labels in the training batches, exact
resume, mirrored and multi-worker jobs, the non-finite guard, the conditional
importance-weighted NLL, figures, and clear errors."""

import dataclasses
import io
import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from tests.engine.train.trainers import make_trainer
from engine.io import run_dir
from engine.eval import likelihood
from engine.run import runner
from engine.io import summaries
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data import pipeline
from engine.data import step_batches
from engine.errors import CheckpointMismatchError
from tests.helpers import run_tool_in_process
from tests.engine.eval.linear_gaussian import LinearGaussian, batch
from tests.helpers import assert_one_line_error, run_cli
from tests.helpers import run_in_process

from engine.cli import launch_local  # noqa: E402
from tests import helpers

pytestmark = pytest.mark.e2e


def _config(data_dir, model_dir, model="dense", conditional=True, **train):
  return helpers.run_config(
      data_dir, model_dir, model, data={"binarize": "dynamic"},
      model_options={"latent_dim": 2, "conditional": conditional},
      **{"batch_size": 64, "train_steps": 30, "steps_per_loop": 7,
         "log_every": 10, "checkpoint_every": 0, "eval_every": 0, **train})



def test_training_batches_carry_each_images_own_label(mnist):
  """Labels are gathered with the same order as the images, on both paths
  (tf.data and batches built in the loop), and nothing else changes."""
  images = pipeline.as_tensor(mnist.train_images[:640])
  # Labels that name their image: an image's row can be checked against it.
  ids = tf.range(640, dtype=tf.int64)
  options = pipeline.PipelineOptions(32, 3, "none", 0.0, 2)
  labelled = list(pipeline.train_dataset(images, options, 17, 21,
                                         labels=ids))
  plain = list(pipeline.train_dataset(images, options, 17, 21))
  built = step_batches.StepBatches(images, options, 4, labels=ids)
  draws = built.draw(17)
  for step, (with_labels, without) in enumerate(zip(labelled, plain)):
    rows = with_labels["labels"].numpy()
    assert len(set(rows)) == 32
    np.testing.assert_array_equal(
        with_labels["targets"].numpy(),
        mnist.train_images[rows].astype(np.float32) / 255.0)
    for key in without:
      np.testing.assert_array_equal(with_labels[key], without[key])
    in_loop = built.batch(tf.nest.map_structure(lambda d: d[step], draws))
    np.testing.assert_array_equal(in_loop["labels"], rows)
    np.testing.assert_array_equal(in_loop["targets"], with_labels["targets"])


@pytest.mark.parametrize("model,jit_compile", [("dense", True),
                                               ("conv", False)])
def test_a_conditional_run_resumes_bit_exactly(small_mnist_dir, tmp_path,
                                               model, jit_compile):
  """Dense with XLA builds its labelled batches in the loop; conv reads
  them from tf.data."""
  def config(model_dir, steps):
    return _config(small_mnist_dir, model_dir, model, train_steps=steps,
                   jit_compile=jit_compile)
  whole = runner.run(config(tmp_path / "a", 30), io.StringIO())
  runner.run(config(tmp_path / "b", 11), io.StringIO())
  resumed = runner.run(config(tmp_path / "b", 30), io.StringIO())
  assert resumed.resumed_from.endswith("ckpt-11")
  assert whole.weights_fingerprint == resumed.weights_fingerprint
  a = helpers.checkpointed_state(str(tmp_path / "a"))
  b = helpers.checkpointed_state(str(tmp_path / "b"))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_the_label_helps_and_the_checkpoint_remembers_it(small_mnist_dir,
                                                         tmp_path):
  """Knowing the digit, the decoder explains the image better: the
  conditional ELBO (of log p(x | y)) is above the unconditional one's. And a
  conditional run's directory refuses an unconditional restart."""
  # Without XLA's compile, which this is not about.
  conditional = runner.run(
      _config(small_mnist_dir, tmp_path / "c", train_steps=200,
              learning_rate=2e-3, jit_compile=False), io.StringIO())
  unconditional = runner.run(
      _config(small_mnist_dir, tmp_path / "u", conditional=False,
              train_steps=200, learning_rate=2e-3, jit_compile=False),
      io.StringIO())
  assert (conditional.test_metrics["elbo"]
          > unconditional.test_metrics["elbo"] + 3), (
              conditional.test_metrics, unconditional.test_metrics)
  with pytest.raises(CheckpointMismatchError, match=(
      r"holds a run trained with other settings \(--conditional=True there, "
      r"False here\)")):
    runner.run(_config(small_mnist_dir, tmp_path / "c", conditional=False,
                       train_steps=300, jit_compile=False), io.StringIO())


def test_mirrored_conditional_training_matches_one_device(small_mnist_dir,
                                                          tmp_path):
  common = ["--model=conv", "--conditional", f"--data_dir={small_mnist_dir}",
            "--batch_size=96", "--train_steps=10", "--steps_per_loop=5",
            "--optimizer=sgd", "--learning_rate=1e-3", "--checkpoint_every=0",
            "--nofigures", "--eval_nll_samples=3"]
  mirrored = run_cli(*common, "--strategy=mirrored", "--cpu_devices=2",
                     f"--model_dir={tmp_path}/m")
  single = run_in_process(*common, f"--model_dir={tmp_path}/s")
  assert mirrored.returncode == 0, mirrored.stderr
  assert single.returncode == 0, single.stderr
  assert "2 replica(s)" in mirrored.stdout
  evals = [summaries.read_metrics(str(tmp_path / d))["eval"][10]
           for d in ("m", "s")]
  assert abs(evals[0]["elbo"] - evals[1]["elbo"]) < 1e-3, evals
  assert abs(evals[0]["nll"] - evals[1]["nll"]) < 1e-3, evals


def test_two_worker_conditional_job_matches_one_device(small_mnist_dir,
                                                        tmp_path):
  common = ["--model=conv", "--conditional", f"--data_dir={small_mnist_dir}",
            "--batch_size=64", "--train_steps=6", "--steps_per_loop=3",
            "--log_every=3", "--checkpoint_every=0", "--optimizer=sgd",
            "--learning_rate=1e-3", "--nofigures"]
  processes = launch_local.start_workers(
      2, [*common, f"--model_dir={tmp_path}/job"], stdout=subprocess.PIPE)
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  assert [p.returncode for p in processes] == [0, 0], outputs
  single = run_in_process(*common, f"--model_dir={tmp_path}/single")
  assert single.returncode == 0, single.stderr
  job, alone = (summaries.read_metrics(str(tmp_path / d))["eval"][6]["elbo"]
                for d in ("job", "single"))
  assert abs(job - alone) < 1e-3, (job, alone)


def test_a_non_finite_step_is_never_applied_to_a_conditional_model(mnist):
  keras.utils.set_random_seed(0)
  vae = models.get("conv").create((28, 28, 1), 2, num_classes=10)
  trainer = make_trainer(vae, ModelConfig(name="conv", latent_dim=2),
                          tf.distribute.get_strategy(), 16, 1e-3)
  options = pipeline.PipelineOptions(16, 0, "none", 0.0, 2)
  batches = list(pipeline.train_dataset(
      pipeline.as_tensor(mnist.train_images[:512]), options, 0, 4,
      labels=pipeline.as_tensor(mnist.train_labels[:512])))
  batches[2]["targets"] = batches[2]["targets"] * np.nan
  before = [v.numpy().copy() for v in vae.trainable_variables]
  outputs = trainer.train(4, batches=iter(
      tf.data.Dataset.from_tensor_slices(
          {k: tf.stack([b[k] for b in batches]) for k in batches[0]})))
  assert outputs.guard.stop_cause == "non_finite"
  assert outputs.guard.last_bad_step == 2 and outputs.step == 3
  after = [v.numpy() for v in vae.trainable_variables]
  assert all(np.isfinite(a).all() for a in after)
  assert any(not np.array_equal(a, b) for a, b in zip(after, before))


class LabelledLinearGaussian(LinearGaussian):
  """p(x | z, y) = N(W z + b + c_y, s^2 I): p(x | y) = N(b + c_y, W W^T +
  s^2 I), and the encoder is the (perturbed) exact posterior given y."""

  def __init__(self, classes=3, **kwargs):
    super().__init__(**kwargs)
    self.offsets = np.random.default_rng(5).normal(
        scale=2.0, size=(classes, len(self.b)))

  def _shift(self, x, labels):
    return tf.cast(x, tf.float64) - tf.gather(self.offsets, labels)

  def encode(self, x, labels):
    return super().encode(self._shift(x, labels))

  def log_likelihood(self, x, z, labels):
    return super().log_likelihood(self._shift(x, labels), z)


def test_conditional_nll_estimates_log_p_x_given_y():
  model = LabelledLinearGaussian()
  labels = np.arange(40) % 3
  x = model.sample(40) + model.offsets[labels]
  element = dict(batch(x, 3), labels=tf.constant(labels))
  evaluator = likelihood.ImportanceSampledEvaluator(
      model.encode, model.log_likelihood, tf.distribute.get_strategy(), (6,),
      3, num_samples=2000, global_batch_size=40, seed=0,
      rows_per_chunk=20_000, conditional=True)
  result = evaluator.evaluate(tf.data.Dataset.from_tensors(element))
  exact = -model.log_marginal(x - model.offsets[labels])
  assert abs(result.nll - exact.mean()) < result.nll_stderr
  # The wrong labels explain the data far worse.
  wrong = dict(element, labels=tf.constant((labels + 1) % 3))
  assert evaluator.evaluate(tf.data.Dataset.from_tensors(wrong)).nll > (
      result.nll + 5)


def _unlabelled_folder(directory, mnist, count=96):
  """PNGs straight in the folder: images without labels (-1)."""
  os.makedirs(directory, exist_ok=True)
  for i in range(count):
    tf.io.write_file(os.path.join(directory, f"{i:03d}.png"),
                     tf.io.encode_png(mnist.train_images[i]))
  return str(directory)


def test_unlabelled_data_is_a_one_line_error(mnist, tmp_path):
  folder = _unlabelled_folder(tmp_path / "images", mnist)
  line = assert_one_line_error(
      run_in_process(f"--data_dir={folder}", "--conditional",
                     "--test_fraction=0.25", "--batch_size=16",
                     "--train_steps=2", f"--model_dir={tmp_path}/m"),
      "--conditional:", "images without a label")
  assert not os.path.exists(tmp_path / "m" / "checkpoint")
  print(f"\nBAD-INPUT | --conditional on unlabelled images | {line}")


_SHARES_THE_CONV_RUN = pytest.mark.xdist_group("conditional_conv_run")


@pytest.fixture(scope="module")
def conv_run(small_mnist_dir, tmp_path_factory):
  """A 20-step conditional conv run with its figures and an export, which
  the tests of the plot and evaluate tools only read: (model dir, result)."""
  directory = tmp_path_factory.mktemp("conditional_conv")
  result = runner.run(_config(small_mnist_dir, directory / "run", "conv",
                              train_steps=20, figures=True,
                              export_dir=str(directory / "export")),
                      io.StringIO())
  return directory / "run", result


@_SHARES_THE_CONV_RUN
def test_a_conditional_run_draws_samples_per_class_and_style(small_mnist_dir,
                                                             mnist, tmp_path,
                                                             conv_run):
  model_dir, result = conv_run
  names = {os.path.basename(p) for p in result.figure_paths}
  assert {"samples_per_class.png", "style.png", "traversals.png",
          "interpolations.png", "latent_manifold.png"} <= names
  for path in result.figure_paths:
    assert os.path.getsize(path) > 1000, path
  # The checkpoint and the export (its label-taking signatures) draw the
  # same figures.
  for source, output in ((f"--model_dir={model_dir}", "from_checkpoint"),
                         (f"--saved_model={result.export_path}",
                          "from_export")):
    plotted = _plot(source, f"--data_dir={small_mnist_dir}",
                    f"--output_dir={tmp_path}/{output}")
    assert plotted.returncode == 0, plotted.stderr[-2000:]
    assert {"samples_per_class.png", "style.png"} <= set(
        os.listdir(tmp_path / output))
  # Only a checkpoint has the per-unit KL that picks the traversed units.
  assert "traversals.png" in os.listdir(tmp_path / "from_checkpoint")
  # Test images without labels cannot be drawn by a conditional model.
  folder = _unlabelled_folder(tmp_path / "unlabelled", mnist)
  line = assert_one_line_error(
      _plot(f"--saved_model={result.export_path}", f"--data_dir={folder}",
            f"--output_dir={tmp_path}/none"),
      "the model is conditional on 10 classes but", "have no label in 0..9")
  print(f"\nBAD-INPUT | conditional export plotted on unlabelled images | "
        f"{line}")


def _plot(*flags):
  return run_tool_in_process("plot", *flags)


def test_plain_flags_and_the_saved_config_round_trip(small_mnist_dir,
                                                     tmp_path):
  config = _config(small_mnist_dir, tmp_path, train_steps=2)
  runner.run(config, io.StringIO())
  saved = run_dir.read_run_config(str(tmp_path))
  assert saved.model.conditional
  assert "--conditional\n" in (tmp_path / "flags.txt").read_text()
  trained = run_dir.load_trained_model(str(tmp_path))
  assert trained.vae.num_classes == 10
  assert dataclasses.replace(saved) == config


@_SHARES_THE_CONV_RUN
def test_evaluate_tool_conditional_nll_from_checkpoint_equals_export(
    small_mnist_dir, tmp_path, conv_run):
  import json

  model_dir, result = conv_run
  records = []
  for source in ([f"--model_dir={model_dir}"],
                 [f"--saved_model={result.export_path}",
                  "--reconstruction_loss=bernoulli"]):
    evaluated = run_tool_in_process(
        "evaluate", *source, f"--data_dir={small_mnist_dir}",
        "--binarize=dynamic", "--eval_nll_samples=8",
        "--max_test_examples=200", "--batch_size=64",
        f"--output_json={tmp_path}/r.json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    records.append(json.loads((tmp_path / "r.json").read_text()))
  checkpoint, export = records
  assert checkpoint["examples"] == export["examples"] == 200
  assert export["nll"] == pytest.approx(checkpoint["nll"], rel=1e-5)
  assert export["elbo"] == pytest.approx(checkpoint["elbo"], rel=1e-5)
  assert checkpoint["nll"] <= -checkpoint["elbo"] + 0.5


def test_tools_that_measure_unconditional_models_say_so():
  from engine.errors import UserError
  from engine.run import parts
  config = RunConfig(model=ModelConfig(conditional=True))
  with pytest.raises(UserError, match="--conditional: this tool measures "
                     "unconditional models only"):
    parts.model_and_trainer(config, (28, 28, 1), 1000)


def test_colour_images_of_a_labelled_tfds_dataset(tmp_path, monkeypatch):
  """cifar10 (tfds mock data: 32x32x3, labels 0-9): the label planes join
  three channels, and the samples per class come out in colour."""
  import tensorflow_datasets as tfds
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared",
                      lambda self: True)
  config = RunConfig(
      data=DataConfig(dataset="cifar10"),
      model=ModelConfig(name="conv", latent_dim=2, conditional=True),
      train=TrainConfig(model_dir=str(tmp_path), batch_size=32, train_steps=4,
                        steps_per_loop=2, log_every=2, checkpoint_every=0))
  with tfds.testing.mock_data(num_examples=96):
    result = runner.run(config, io.StringIO())
  assert np.isfinite(result.test_metrics["elbo"])
  trained = run_dir.load_trained_model(str(tmp_path))
  assert trained.vae.num_classes == 10
  assert trained.vae.image_shape == (32, 32, 3)
  assert "samples_per_class.png" in {os.path.basename(p)
                                     for p in result.figure_paths}


def test_a_tfds_dataset_without_labels_reads_as_unlabelled():
  from engine.data import tfds_source

  class Builder:
    def as_dataset(self, split):
      return tf.data.Dataset.from_tensor_slices(
          {"image": np.zeros((5, 4, 4, 1), np.uint8)})

  images, labels = tfds_source.split_arrays(Builder(), "train", "faces")
  assert images.shape == (5, 4, 4, 1)
  np.testing.assert_array_equal(labels, [-1] * 5)


def test_a_conditional_model_trains_and_exports_under_bfloat16(
    small_mnist_dir, tmp_path):
  config = _config(small_mnist_dir, tmp_path, "conv", train_steps=6,
                   mixed_precision="mixed_bfloat16",
                   export_dir=str(tmp_path / "e"))
  result = runner.run(config, io.StringIO())
  assert np.isfinite(result.test_metrics["elbo"])
  loaded = tf.saved_model.load(result.export_path)
  images = loaded.signatures["sample"](num=tf.constant(4),
                                       label=tf.constant(2))["images"]
  assert images.dtype == tf.float32 and np.isfinite(images.numpy()).all()
