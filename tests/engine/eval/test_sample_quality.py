"""The download-free sample-quality score (engine.eval.sample_quality)."""

import io
import math
import os

import numpy as np
import pytest

from engine.run import runner
from engine.eval import sample_quality
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def test_frechet_distance_of_gaussians_has_the_closed_form():
  rng = np.random.default_rng(0)
  a = rng.normal(size=(20000, 4))
  assert sample_quality.frechet_distance(a, a) < 1e-9
  shifted = a + [1.0, 2.0, 0.0, 0.0]
  assert sample_quality.frechet_distance(a, shifted) == pytest.approx(
      5.0, rel=1e-6)
  # N(0, I) against N(0, 4 I) in 4 dimensions: 4 * (2 - 1)^2.
  wider = rng.normal(size=(20000, 4)) * 2.0
  assert sample_quality.frechet_distance(a, wider) == pytest.approx(
      4.0, rel=0.05)


def test_class_entropy_is_log_classes_for_all_classes_and_0_for_one():
  uniform = np.eye(10)[np.arange(1000) % 10]
  assert sample_quality.class_entropy(uniform) == pytest.approx(math.log(10))
  assert sample_quality.class_entropy(np.eye(10)[np.zeros(50, int)]) < 1e-6


# The tests that use the classifier share one worker, which trains it once
# (`mnist_classifier_dir` is trained once per worker).
_SHARES_THE_CLASSIFIER = pytest.mark.xdist_group("mnist_classifier")


@pytest.fixture(scope="module")
def classifier_dir(mnist_classifier_dir):
  return mnist_classifier_dir


@pytest.fixture(scope="module")
def classifier(classifier_dir, mnist):
  # Trained by the fixture (tests/conftest.py) on these same arguments.
  return sample_quality.load_or_train(
      classifier_dir, mnist.train_images[:16000], mnist.train_labels[:16000],
      mnist.test_images[:2000], mnist.test_labels[:2000], epochs=2)


@_SHARES_THE_CLASSIFIER
@pytest.mark.e2e
def test_the_classifier_learns_the_labels_and_is_cached(classifier,
                                                        classifier_dir, mnist):
  # 16,000 images, 2 epochs: 0.956 on an AMD EPYC Zen 3 (Keras training is
  # not bit-exact across machines); chance is 0.1.
  assert classifier.test_accuracy > 0.9
  assert os.path.exists(os.path.join(classifier_dir, "classifier",
                                     "classifier.json"))
  again = sample_quality.load_or_train(
      classifier_dir, mnist.train_images[:10], mnist.train_labels[:10],
      mnist.test_images[:10], mnist.test_labels[:10])
  assert again.test_accuracy == classifier.test_accuracy
  images = mnist.test_images[:200].astype(np.float32) / 255
  np.testing.assert_allclose(again.probabilities(images),
                             classifier.probabilities(images), atol=1e-6)


@_SHARES_THE_CLASSIFIER
@pytest.mark.e2e
def test_the_score_separates_real_trained_briefly_trained_and_noise(
    classifier, mnist, small_mnist_dir, tmp_path):
  test = mnist.test_images[:2000]
  real = sample_quality.score(classifier, test,
                              mnist.test_images[2000:4000] / 255.0)
  noise = sample_quality.score(
      classifier, test,
      np.random.default_rng(0).uniform(size=(2000, 28, 28, 1)))

  def samples_after(steps):
    # Without XLA: what is scored is how far training got, not how its
    # steps were compiled.
    config = RunConfig(
        data=DataConfig(data_dir=small_mnist_dir),
        model=ModelConfig(name="dense", latent_dim=8),
        train=TrainConfig(model_dir=str(tmp_path / str(steps)), batch_size=64,
                          train_steps=steps, steps_per_loop=50, log_every=50,
                          checkpoint_every=0, figures=False,
                          jit_compile=False,
                          export_dir=str(tmp_path / f"e{steps}")))
    result = runner.run(config, io.StringIO())
    import tensorflow as tf
    loaded = tf.saved_model.load(result.export_path)
    return loaded.signatures["sample"](num=tf.constant(2000))["images"].numpy()

  briefly = sample_quality.score(classifier, test, samples_after(32))
  longer = sample_quality.score(classifier, test, samples_after(600))
  distances = [real["classifier_frechet_distance"],
               longer["classifier_frechet_distance"],
               briefly["classifier_frechet_distance"]]
  # Held-out real digits ~0 < 600 steps < one epoch (32 steps) of these
  # 2,048 images; uniform noise is far from a trained model's samples. (A
  # barely trained model's blurs can be as far as noise in this
  # classifier's features: measured 128-140 against 119-129.)
  assert distances == sorted(distances), distances
  assert distances[0] < 0.05 * distances[1]
  assert noise["classifier_frechet_distance"] > 2 * distances[1]
  assert real["sample_class_entropy"] > 0.95 * math.log(10)


@pytest.mark.e2e
def test_the_run_and_the_evaluate_tool_report_sample_quality(
    small_mnist_dir, tmp_path):
  import json

  from engine.io import summaries
  from tests.helpers import run_in_process
  from tests.helpers import run_tool_in_process

  run = run_in_process("--model=dense", f"--data_dir={small_mnist_dir}",
                       "--train_steps=40", "--batch_size=64", "--nofigures",
                       "--sample_quality", f"--model_dir={tmp_path}",
                       f"--export_dir={tmp_path}/e")
  assert run.returncode == 0, run.stderr
  assert "class entropy" in run.stdout
  logged = summaries.read_metrics(str(tmp_path))["eval"][40]
  assert 0 < logged["sample_class_entropy"] <= logged["max_class_entropy"]
  assert logged["classifier_frechet_distance"] > 0
  assert os.path.exists(tmp_path / "classifier" / "classifier.json")
  # From the checkpoint, and from the export with the run's cached
  # classifier: the same scores.
  for source in ([f"--model_dir={tmp_path}"],
                 [f"--saved_model={tmp_path}/e/40", f"--model_dir={tmp_path}"]):
    evaluated = run_tool_in_process(
        "evaluate", *source, f"--data_dir={small_mnist_dir}",
        "--eval_nll_samples=2", "--sample_quality",
        f"--output_json={tmp_path}/q.json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    record = json.loads((tmp_path / "q.json").read_text())
    assert record["classifier_frechet_distance"] == pytest.approx(
        logged["classifier_frechet_distance"], rel=1e-3)
    assert "classifier Fréchet distance" in evaluated.stdout


def test_conditional_accuracy_counts_samples_read_as_their_label():
  probabilities = np.eye(3)[[0, 1, 2, 2, 0, 1]]
  labels = np.array([0, 1, 2, 0, 1, 1])
  assert sample_quality.conditional_accuracy(probabilities, labels) == 4 / 6


def test_prior_samples_of_a_conditional_model_cycle_through_the_labels():
  seen = []

  def decode(z, labels):
    seen.append(None if labels is None else np.asarray(labels))
    return np.zeros((len(z), 4, 4, 1), np.float32) + np.asarray(z)[:, :1,
                                                                   None, None]

  samples, labels = sample_quality.prior_samples(decode, 3, 25, seed=0,
                                                 num_classes=10,
                                                 batch_size=10)
  assert samples.shape == (25, 4, 4, 1)
  np.testing.assert_array_equal(labels, np.arange(25) % 10)
  np.testing.assert_array_equal(np.concatenate(seen), labels)
  again, none = sample_quality.prior_samples(decode, 3, 25, seed=0)
  assert none is None and seen[-1] is None
  np.testing.assert_array_equal(again, samples)  # The same z: keyed on seed.


@_SHARES_THE_CLASSIFIER
@pytest.mark.e2e
def test_score_adds_conditional_accuracy_only_given_labels(classifier, mnist):
  images = mnist.test_images[:300].astype(np.float32) / 255
  plain = sample_quality.score(classifier, mnist.test_images[:300], images)
  assert "conditional_accuracy" not in plain
  right = sample_quality.score(classifier, mnist.test_images[:300], images,
                               mnist.test_labels[:300])
  wrong = sample_quality.score(classifier, mnist.test_images[:300], images,
                               (mnist.test_labels[:300] + 1) % 10)
  assert right["conditional_accuracy"] > 0.85
  assert wrong["conditional_accuracy"] < 0.1
  assert "classified as their label" in sample_quality.describe(right, 300)
