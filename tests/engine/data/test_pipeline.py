"""The input pipeline: exact resume, coverage, binarization, noise, sharding."""

import numpy as np
import pytest
import tensorflow as tf

from engine.data import pipeline
from engine.data import step_batches


@pytest.fixture(scope="module")
def images(mnist):
  return pipeline.as_tensor(mnist.train_images[:1000])


def _options(**overrides):
  values = dict(global_batch_size=100, seed=3, binarize="none",
                noise_factor=0.0, latent_dim=2)
  values.update(overrides)
  return pipeline.PipelineOptions(**values)


def _collect(dataset):
  return [{k: v.numpy() for k, v in element.items()} for element in dataset]


def test_types_shapes_and_range(images):
  element = next(iter(pipeline.train_dataset(images, _options(), 0, 1)))
  assert element["inputs"].dtype == tf.float32
  assert element["inputs"].shape == (100, 28, 28, 1)
  assert element["epsilon"].shape == (100, 2)
  assert 0.0 <= float(tf.reduce_min(element["inputs"]))
  assert float(tf.reduce_max(element["inputs"])) == 1.0


def test_each_epoch_is_a_permutation(images, mnist):
  batches = _collect(pipeline.train_dataset(images, _options(), 0, 20))
  first_epoch = np.concatenate([b["targets"] for b in batches[:10]])
  second_epoch = np.concatenate([b["targets"] for b in batches[10:]])
  expected = np.sort(mnist.train_images[:1000].reshape(1000, -1) / 255.0,
                     axis=0)
  for epoch in (first_epoch, second_epoch):
    np.testing.assert_allclose(np.sort(epoch.reshape(1000, -1), axis=0),
                               expected, atol=1e-6)
  assert not np.array_equal(first_epoch, second_epoch)


def test_resume_position_gives_the_same_batches(images):
  options = _options(binarize="dynamic", noise_factor=0.3)
  full = _collect(pipeline.train_dataset(images, options, 0, 25))
  resumed = _collect(pipeline.train_dataset(images, options, 13, 25))
  for a, b in zip(full[13:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_seed_changes_order(images):
  a = next(iter(pipeline.train_dataset(images, _options(seed=1), 0, 1)))
  b = next(iter(pipeline.train_dataset(images, _options(seed=2), 0, 1)))
  assert not np.array_equal(a["targets"], b["targets"])


def test_static_binarization_thresholds(images):
  element = next(iter(pipeline.train_dataset(
      images, _options(binarize="static"), 0, 1)))
  values = np.unique(element["targets"])
  assert set(values) <= {0.0, 1.0}
  grey = next(iter(pipeline.train_dataset(images, _options(), 0, 1)))
  np.testing.assert_array_equal(element["targets"],
                                (grey["targets"].numpy() >= 0.5))


def test_dynamic_binarization_samples_each_step(images):
  # With a batch of the whole (1,000-image) set, each step is one epoch in a
  # new order; per-pixel sums over an epoch do not depend on the order.
  grey = _collect(pipeline.train_dataset(
      images, _options(global_batch_size=1000), 0, 2))
  np.testing.assert_allclose(grey[0]["targets"].sum(0),
                             grey[1]["targets"].sum(0), rtol=1e-5)
  binary = _collect(pipeline.train_dataset(
      images, _options(binarize="dynamic", global_batch_size=1000), 0, 2))
  assert set(np.unique(binary[0]["targets"])) == {0.0, 1.0}
  assert not np.array_equal(binary[0]["targets"].sum(0),
                            binary[1]["targets"].sum(0))  # Fresh draws.
  # Unbiased: the binary images average to the grey levels.
  assert abs(binary[0]["targets"].mean() - grey[0]["targets"].mean()) < 0.005


def test_denoising_noise_keeps_targets_clean(images):
  noisy = next(iter(pipeline.train_dataset(
      images, _options(noise_factor=0.2), 0, 1)))
  clean = next(iter(pipeline.train_dataset(images, _options(), 0, 1)))
  np.testing.assert_array_equal(noisy["targets"], clean["targets"])
  difference = (noisy["inputs"] - noisy["targets"]).numpy()
  assert 0.05 < difference.std() < 0.2
  assert noisy["inputs"].numpy().min() >= 0 and noisy["inputs"].numpy().max() <= 1


def test_eval_covers_every_example_once(mnist):
  test_images = pipeline.as_tensor(mnist.test_images)
  labels = tf.constant(mnist.test_labels)
  batches = _collect(pipeline.eval_dataset(
      test_images, labels, _options(global_batch_size=128)))
  assert sum(b["weights"].sum() for b in batches) == 10000
  # The last batch is padded to full size; its padding has weight 0.
  assert all(len(b["labels"]) == 128 for b in batches)
  np.testing.assert_array_equal(batches[-1]["weights"],
                                np.arange(128) < 10000 % 128)
  real = [pipeline.real_examples(b) for b in batches]
  np.testing.assert_array_equal(np.concatenate([b["labels"] for b in real]),
                                mnist.test_labels)


def test_padding_leaves_the_real_examples_unchanged(mnist):
  """Rows 100-129 get the same inputs, targets and noise whether they end a
  padded last batch (130 examples) or sit in a full one (200 examples)."""
  options = _options(global_batch_size=100, binarize="dynamic",
                     noise_factor=0.3)

  def second_batch(count):
    return _collect(pipeline.eval_dataset(
        pipeline.as_tensor(mnist.test_images[:count]),
        tf.constant(mnist.test_labels[:count]), options))[1]

  padded, full = second_batch(130), second_batch(200)
  alone = pipeline.real_examples(padded)
  assert len(alone["labels"]) == 30 and full["weights"].sum() == 100
  for key in ("inputs", "targets", "epsilon", "labels"):
    np.testing.assert_array_equal(alone[key], full[key][:30])


class _Context:
  """A stand-in for tf.distribute.InputContext."""

  def __init__(self, pipelines, pipeline_id, replicas):
    self.num_input_pipelines = pipelines
    self.input_pipeline_id = pipeline_id
    self.num_replicas_in_sync = replicas


@pytest.mark.parametrize("pipelines,replicas", [(1, 2), (2, 2), (2, 4)])
def test_replica_slices_make_up_the_global_batch(images, pipelines, replicas):
  options = _options(binarize="dynamic", noise_factor=0.1)
  single = _collect(pipeline.train_dataset(images, options, 4, 6))
  per_pipeline = [_collect(pipeline.train_dataset(
      images, options, 4, 6, _Context(pipelines, p, replicas)))
                  for p in range(pipelines)]
  local = replicas // pipelines
  for step in range(2):
    slices = [per_pipeline[p][step * local + r]
              for p in range(pipelines) for r in range(local)]
    for key in single[step]:
      np.testing.assert_array_equal(
          np.concatenate([s[key] for s in slices]), single[step][key])
    # Every replica draws its own reparameterization noise (a seeded Keras
    # SeedGenerator would give each replica the same draws).
    for a in range(len(slices)):
      for b in range(a + 1, len(slices)):
        assert not np.allclose(slices[a]["epsilon"], slices[b]["epsilon"])


@pytest.mark.parametrize("num_examples,batch,pipelines,replicas", [
    (1001, 100, 2, 4),  # Last batch 1: three of four replicas get nothing.
    (130, 96, 1, 3),    # Last batch 34 over 3 replicas of 32: 32, 2, 0.
    (512, 96, 1, 2),    # Last batch 32 over 2 replicas of 48: 32, 0.
    (5, 96, 2, 2),      # Fewer examples than replicas' rows.
])
def test_eval_sharded_gives_every_replica_a_full_batch(mnist, num_examples,
                                                       batch, pipelines,
                                                       replicas):
  """Every element has the same static shape whichever replica it feeds, and
  the weights count each test example exactly once."""
  test_images = pipeline.as_tensor(mnist.test_images[:num_examples])
  labels = tf.constant(np.arange(num_examples))
  per_replica = batch // replicas
  seen, elements = [], 0
  for p in range(pipelines):
    dataset = pipeline.eval_dataset(
        test_images, labels,
        _options(global_batch_size=batch, binarize="dynamic",
                 noise_factor=0.1), _Context(pipelines, p, replicas))
    for name, spec in dataset.element_spec.items():
      assert spec.shape.is_fully_defined(), name
      if spec.shape.rank:
        assert spec.shape[0] == per_replica, name
    for element in dataset:
      elements += 1
      weights = element["weights"].numpy()
      assert set(np.unique(weights)) <= {0.0, 1.0}
      seen.extend(element["labels"].numpy()[weights > 0].tolist())
  assert elements == -(-num_examples // batch) * replicas
  assert sorted(seen) == list(range(num_examples))


def test_batch_must_divide_by_replicas(images):
  with pytest.raises(ValueError, match="does not divide into 3 replicas"):
    pipeline.train_dataset(images, _options(), 0, 1, _Context(1, 0, 3))


def test_k_samples_per_example_give_independent_noise(images):
  element = next(iter(pipeline.train_dataset(
      images, _options(samples_per_example=5), 0, 1)))
  epsilon = element["epsilon"].numpy()
  assert epsilon.shape == (100, 5, 2)
  assert abs(np.corrcoef(epsilon[:, 0, 0], epsilon[:, 1, 0])[0, 1]) < 0.35
  assert abs(epsilon.std() - 1.0) < 0.1


def test_eval_elements_say_where_they_sit_in_the_global_batch(mnist):
  test_images = pipeline.as_tensor(mnist.test_images[:250])
  labels = tf.constant(np.arange(250))
  for p in range(2):
    for element in pipeline.eval_dataset(test_images, labels,
                                         _options(global_batch_size=100),
                                         _Context(2, p, 4)):
      if element["weights"][0] > 0:
        assert int(element["labels"][0]) == (int(element["batch_index"]) * 100
                                             + int(element["offset"]))


def test_target_mean_is_the_expected_target(mnist):
  images = mnist.train_images[:3000]
  np.testing.assert_allclose(pipeline.target_mean(images, "dynamic"),
                             images.astype(np.float64).mean(0) / 255,
                             atol=1e-6)
  np.testing.assert_allclose(pipeline.target_mean(images, "static"),
                             (images / 255.0 >= 0.5).mean(0), atol=1e-6)
  assert pipeline.target_mean(images, "none").shape == (28, 28, 1)


@pytest.mark.parametrize("overrides", [
    {},
    {"binarize": "dynamic", "noise_factor": 0.4, "samples_per_example": 3},
    {"binarize": "static"},
])
def test_step_batches_are_the_datasets_batches(images, overrides):
  """The in-loop batches (host draws, XLA gather and arithmetic) equal the
  tf.data ones: steps 5-15 cross the epoch boundary at 10."""
  options = _options(**overrides)
  source = step_batches.StepBatches(images, options, max_steps_per_call=4)
  assert source.steps_per_call == 4
  expected = _collect(pipeline.train_dataset(images, options, 5, 16))
  build = tf.function(source.batch, jit_compile=True)
  got = []
  for first in (5, 9, 13):
    draws = source.draw(tf.constant(first, tf.int64))
    assert draws["order"].shape == (4, 100)
    got += [build({k: v[i] for k, v in draws.items()}) for i in range(4)]
  for step, (want, have) in enumerate(zip(expected, got), start=5):
    np.testing.assert_array_equal(have["targets"], want["targets"],
                                  err_msg=f"step {step}")
    np.testing.assert_array_equal(have["epsilon"], want["epsilon"])
    # Noise is added with a fused multiply-add under XLA: one rounding.
    np.testing.assert_allclose(have["inputs"], want["inputs"], atol=1e-6)


def test_step_batches_bound_the_memory_of_their_draws(images):
  options = _options(binarize="dynamic", noise_factor=0.5)
  # Per step: 100 examples x (2 x 784 pixels + 2 latent) floats + order.
  per_step = 100 * (4 * (2 * 784 + 2) + 8)
  source = step_batches.StepBatches(images, options, max_steps_per_call=1000,
                                draw_budget_bytes=10 * per_step + 1)
  assert source.steps_per_call == 10
  tiny = step_batches.StepBatches(images, options, 1000, draw_budget_bytes=1)
  assert tiny.steps_per_call == 1
  with pytest.raises(ValueError, match="cannot fill one batch"):
    step_batches.StepBatches(images[:50], options, 10)
