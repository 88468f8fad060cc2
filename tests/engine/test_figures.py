"""Figures: written for a real (short) run, non-blank, of sensible size."""

import io
import os

import matplotlib.image
import numpy as np
import pytest

import models
from engine import figures
from engine import runner
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
               "latent_scatter", "loss_curves"}),
    ("denoising", {"reconstructions", "samples", "latent_manifold",
                   "latent_scatter", "loss_curves", "denoising"}),
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
  grid = figures.tile(images, 4)
  assert grid.shape == (4, 12)
  assert grid[0, 0] == 0 and grid[0, 3] == 1 and grid[2, 0] == 4
  assert grid[2, 6] == 0  # The empty cells stay blank.


def test_latent_plane_uses_principal_components():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(2000, 5)) * [5, 0.1, 2, 0.1, 0.1] + 3
  origin, basis, names = figures.latent_plane(points)
  np.testing.assert_allclose(origin, points.mean(0), atol=1e-9)
  assert abs(abs(basis[0, 0]) - 5) < 0.3 and abs(abs(basis[1, 2]) - 2) < 0.2
  assert "PC1" in names[0]
  origin2, basis2, _ = figures.latent_plane(points[:, :2])
  np.testing.assert_array_equal(basis2, np.eye(2))
  grid = figures.manifold_latents(origin2, basis2, size=30)
  assert grid.shape == (900, 2)
  np.testing.assert_allclose(grid[0], [-2, 2])
  np.testing.assert_allclose(grid[-1], [2, -2])
