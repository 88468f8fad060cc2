"""Figures: written for a real (short) run, non-blank, of sensible size."""

import io
import os

import matplotlib.image
import numpy as np
import pytest

import models
from engine.viz import plots
from engine.viz import figure_set
from engine.run import runner
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def _run(data_dir, model_dir, model):
  spec = models.get(model)
  config = RunConfig(
      data=DataConfig(data_dir=data_dir,
                      noise_factor=spec.default_noise_factor),
      model=ModelConfig(name=model, latent_dim=spec.default_latent_dim),
      train=TrainConfig(model_dir=str(model_dir), batch_size=64,
                        train_steps=60, log_every=20, eval_every=30,
                        checkpoint_every=0))
  return runner.run(config, stream=io.StringIO())


def _png(path):
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  return image


@pytest.mark.parametrize("model,expected", [
    ("dense", {"reconstructions", "samples", "latent_manifold",
               "latent_scatter", "loss_curves", "traversals",
               "interpolations"}),
    ("denoising", {"reconstructions", "samples", "latent_manifold",
                   "latent_scatter", "loss_curves", "denoising",
                   "traversals", "interpolations"}),
])
def test_every_figure_is_a_non_blank_png(small_mnist_dir, tmp_path, model,
                                         expected):
  result = _run(small_mnist_dir, tmp_path, model)
  names = {os.path.splitext(os.path.basename(p))[0]
           for p in result.figure_paths}
  assert names == expected
  images = {}
  for path in result.figure_paths:
    assert path.startswith(str(tmp_path / "figures"))
    images[os.path.basename(path)] = image = _png(path)
    assert image[..., :3].var() > 1e-3, path
  manifold, samples = images["latent_manifold.png"], images["samples.png"]
  assert (manifold.shape != samples.shape
          or not np.allclose(manifold, samples))


def test_tile_places_images_row_major():
  images = np.arange(6)[:, None, None] * np.ones((6, 2, 3))
  grid = plots.tile(images, 4)
  assert grid.shape == (4, 12)
  assert grid[0, 0] == 0 and grid[0, 3] == 1 and grid[2, 0] == 4
  assert grid[2, 6] == 0  # The empty cells stay blank.


def test_latent_plane_uses_principal_components():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(2000, 5)) * [5, 0.1, 2, 0.1, 0.1] + 3
  origin, basis, names = plots.latent_plane(points)
  np.testing.assert_allclose(origin, points.mean(0), atol=1e-9)
  assert abs(abs(basis[0, 0]) - 5) < 0.3 and abs(abs(basis[1, 2]) - 2) < 0.2
  assert "PC1" in names[0]
  origin2, basis2, _ = plots.latent_plane(points[:, :2])
  np.testing.assert_array_equal(basis2, np.eye(2))
  grid = plots.manifold_latents(origin2, basis2, [[-2, 2], [-1, 3]],
                                  size=30)
  assert grid.shape == (900, 2)
  np.testing.assert_allclose(grid[0], [-2, 3])
  np.testing.assert_allclose(grid[-1], [2, -1])


def test_manifold_covers_where_the_encoder_puts_the_data(tmp_path):
  """Latent means far from the prior's [-2, 2]^2 (as make train's conv model
  puts them, about [-3, 0.5] x [-3, 2]) are covered by the decoded grid."""
  rng = np.random.default_rng(0)
  means = rng.normal(size=(5000, 2)) * [0.8, 1.2] + [-1.3, -0.5]
  decoded = []

  def decode(z, labels):
    decoded.append(np.asarray(z))
    return np.zeros((len(z), 28, 28, 1), np.float32)

  def encode(images, labels):
    return means[images[:, 0, 0, 0].astype(int)]

  images = np.zeros((5000, 28, 28, 1), np.float32)
  images[:, 0, 0, 0] = np.arange(5000)
  figure_set.write_run_figures(encode, decode, 2, images, images,
                            np.zeros(5000, int), {}, str(tmp_path), seed=0,
                            denoising=False)
  grid = next(z for z in decoded if len(z) == plots.MANIFOLD_SIZE ** 2)
  low, high = grid.min(0), grid.max(0)
  inside = np.all((means >= low) & (means <= high), axis=1).mean()
  assert inside > 0.95, (low, high, inside)  # At most 1% + 1% per axis.
  # Not just a huge square: the grid hugs the data along each axis.
  np.testing.assert_allclose(low, np.percentile(means, 1, axis=0), atol=1e-5)
  np.testing.assert_allclose(high, np.percentile(means, 99, axis=0),
                             atol=1e-5)
  # The fixed [-2, 2]^2 grid covered less than three quarters of them.
  assert np.all((means >= -2) & (means <= 2), axis=1).mean() < 0.75


def test_traversals_sweep_the_most_informative_units_over_prior_quantiles():
  z_mean = np.array([0.3, -1.0, 2.0, 0.5], np.float32)
  codes, units = plots.traversal_latents(z_mean, [0.1, 3.0, 0.0, 1.5],
                                           units=2, steps=5)
  assert units == [1, 3]  # Largest mean KL first.
  rows = codes.reshape(2, 5, 4)
  np.testing.assert_allclose(rows[0, :, 1],
                             [-1.6449, -0.5978, 0.0, 0.5978, 1.6449],
                             atol=1e-4)  # The prior's 5%..95% quantiles.
  np.testing.assert_array_equal(rows[0, :, [0, 2, 3]],
                                np.repeat(z_mean[[0, 2, 3]][:, None], 5, 1))
  np.testing.assert_array_equal(rows[1, :, 1], np.full(5, -1.0))


def test_interpolations_run_straight_between_the_pairs_ends():
  starts, ends = np.zeros((2, 3)), np.array([[1.0, 2, 3], [-1, -1, -1]])
  lines = plots.interpolation_latents(starts, ends, steps=5).reshape(2, 5, 3)
  np.testing.assert_allclose(lines[:, 0], starts)
  np.testing.assert_allclose(lines[:, -1], ends)
  np.testing.assert_allclose(lines[0, 2], [0.5, 1.0, 1.5])


def test_class_sample_and_style_latents():
  z, labels = figure_set.class_sample_latents(4, 3, seed=0, columns=5)
  assert z.shape == (15, 4)
  np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 5))
  assert len({tuple(row) for row in z}) == 15  # Independent draws.
  codes, labels = figure_set.style_latents(np.array([[1.0, 2.0],
                                                      [3.0, 4.0]]), 3)
  np.testing.assert_array_equal(codes, [[1, 2]] * 3 + [[3, 4]] * 3)
  np.testing.assert_array_equal(labels, [0, 1, 2, 0, 1, 2])


def test_conditional_figures_decode_under_the_labels_they_show(tmp_path):
  calls = []

  def decode(z, labels):
    calls.append(np.asarray(labels))
    return np.zeros((len(z), 28, 28, 1), np.float32)

  def encode(images, labels):
    return np.zeros((len(images), 2), np.float32)

  images = np.zeros((20, 28, 28, 1), np.float32)
  labels = np.arange(20) % 10
  paths = figure_set.write_run_figures(
      encode, decode, 2, images, images, labels, {}, str(tmp_path), seed=0,
      denoising=False, num_classes=10)
  assert {"samples_per_class.png", "style.png"} <= {
      os.path.basename(p) for p in paths}
  # Reconstructions use each image's own label; prior samples cycle.
  np.testing.assert_array_equal(calls[0], labels[:10])
  np.testing.assert_array_equal(calls[1], np.arange(100) % 10)
  # Samples per class (10 per row) and style (8 codes x 10 labels).
  np.testing.assert_array_equal(calls[-2], np.repeat(np.arange(10), 10))
  np.testing.assert_array_equal(calls[-1], np.tile(np.arange(10), 8))
