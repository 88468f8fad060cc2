"""The latent codes the figures decode: the manifold's plane and grid, the
traversals and the interpolations."""

from __future__ import annotations

import statistics

import numpy as np

MANIFOLD_SIZE = 30
# The manifold spans these percentiles of the test set's latent means along
# each axis: where the encoder puts the data, not a fixed square that may
# miss most of it.
MANIFOLD_PERCENTILES = (1.0, 99.0)
TRAVERSAL_UNITS, TRAVERSAL_STEPS, INTERPOLATION_PAIRS = 8, 11, 6


def traversal_latents(z_mean: np.ndarray, kl_per_unit: np.ndarray,
                      units: int = TRAVERSAL_UNITS,
                      steps: int = TRAVERSAL_STEPS) -> tuple[np.ndarray, list]:
  """Latent codes of a traversal: for the `units` units with the largest mean
  KL, one row each, that unit swept across the prior's quantiles (5% to 95%)
  and the others at `z_mean` (a test image's posterior mean).

  Returns:
    (codes [rows * steps, D], the units, most informative first).
  """
  order = [int(u) for u in np.argsort(-np.asarray(kl_per_unit))[:units]]
  quantiles = traversal_values(steps)
  codes = np.repeat(np.asarray(z_mean, np.float32)[np.newaxis],
                    len(order) * steps, axis=0)
  for row, unit in enumerate(order):
    codes[row * steps:(row + 1) * steps, unit] = quantiles
  return codes, order


def traversal_values(steps: int = TRAVERSAL_STEPS) -> list[float]:
  """The values a traversal sweeps a unit over: the prior's quantiles, 5%
  to 95%, in `steps` even steps of probability."""
  return [statistics.NormalDist().inv_cdf(q)
          for q in np.linspace(0.05, 0.95, steps)]


def interpolation_latents(starts: np.ndarray, ends: np.ndarray,
                          steps: int = TRAVERSAL_STEPS) -> np.ndarray:
  """Straight lines between pairs of latent codes, `steps` points each
  (row-major: one pair per row, its ends included)."""
  weights = np.linspace(0.0, 1.0, steps)[np.newaxis, :, np.newaxis]
  lines = (1 - weights) * starts[:, np.newaxis] + weights * ends[:, np.newaxis]
  return lines.reshape(-1, starts.shape[-1]).astype(np.float32)


def latent_plane(z_means: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                               tuple[str, str]]:
  """The plane the manifold and scatter figures show.

  For a 2-D latent space it is the space itself. Otherwise it is the plane of
  the latent means' first two principal components through their mean, with
  each axis in units of the standard deviation along it.

  Returns:
    (origin [D], basis [2, D], axis names).
  """
  latent_dim = z_means.shape[1]
  if latent_dim == 2:
    return np.zeros(2), np.eye(2), ("z[0]", "z[1]")
  origin = z_means.mean(axis=0)
  _, singular, components = np.linalg.svd(z_means - origin,
                                          full_matrices=False)
  scale = singular[:2] / np.sqrt(max(len(z_means) - 1, 1))
  basis = components[:2] * scale[:, np.newaxis]
  return origin, basis, ("PC1 (std units)", "PC2 (std units)")


def manifold_extent(projected: np.ndarray,
                    percentiles=MANIFOLD_PERCENTILES) -> np.ndarray:
  """[[x_low, x_high], [y_low, y_high]]: where the latent means lie.

  Args:
    projected: [N, 2] latent means in the plane's coordinates.
    percentiles: (low, high) percentiles taken along each axis.
  """
  extent = np.percentile(projected, percentiles, axis=0).T
  # A degenerate axis (a collapsed unit) still gets a visible span.
  flat = extent[:, 1] - extent[:, 0] < 1e-6
  extent[flat] += [[-1.0, 1.0]]
  return extent


def manifold_latents(origin, basis, extent, size=MANIFOLD_SIZE) -> np.ndarray:
  """Latent points of a size x size grid over `extent` in the plane
  (row-major, top row = largest second coordinate, as in seed 002)."""
  xs = np.linspace(extent[0][0], extent[0][1], size)
  ys = np.linspace(extent[1][0], extent[1][1], size)[::-1]
  coords = np.array([(x, y) for y in ys for x in xs])
  return (origin + coords @ basis).astype(np.float32)
