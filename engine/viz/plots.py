"""The matplotlib figures people judge a VAE by (PNG, Agg backend).

Pure plotting functions that take numpy arrays, and the latent codes the
figures decode. `engine.viz.figure_set` puts them together for a run.
"""

from __future__ import annotations

import io
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from engine.io import files  # noqa: E402

MANIFOLD_SIZE = 30
# The manifold spans these percentiles of the test set's latent means along
# each axis: where the encoder puts the data, not a fixed square that may
# miss most of it.
MANIFOLD_PERCENTILES = (1.0, 99.0)
TRAVERSAL_UNITS, TRAVERSAL_STEPS, INTERPOLATION_PAIRS = 8, 11, 6


def tile(images: np.ndarray, columns: int) -> np.ndarray:
  """Tiles [N, rows, cols(, channels)] images into one grid: [R*rows, C*cols]
  for grey images (one channel or none), [R*rows, C*cols, 3] for colour."""
  images = _displayable(images)
  count, rows, cols = images.shape[:3]
  grid_rows = -(-count // columns)
  grid = np.zeros((grid_rows * rows, columns * cols, *images.shape[3:]),
                  dtype=images.dtype)
  for i, image in enumerate(images):
    r, c = divmod(i, columns)
    grid[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols] = image
  return grid


def _displayable(images) -> np.ndarray:
  """[N, rows, cols] for grey images, [N, rows, cols, 3] for colour."""
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  return images


def _show(axis, image) -> None:
  """Draws a grey or colour image in [0, 1]."""
  image = np.clip(image, 0.0, 1.0)
  if image.ndim == 2:
    axis.imshow(image, cmap="gray", vmin=0.0, vmax=1.0)
  else:
    axis.imshow(image)


def _save(figure, path: str) -> str:
  """Writes the PNG (on any TensorFlow filesystem) and closes the figure."""
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  plt.close(figure)
  files.write_atomically(path, buffer.getvalue())
  return path


def _image_rows(rows: list[tuple[str, np.ndarray]], path: str) -> str:
  """One row of images per (title, images) pair."""
  columns = len(rows[0][1])
  figure, axes = plt.subplots(len(rows), columns,
                              figsize=(1.2 * columns, 1.3 * len(rows)),
                              squeeze=False)
  for r, (title, images) in enumerate(rows):
    for c in range(columns):
      axis = axes[r][c]
      _show(axis, _displayable(images)[c])
      axis.set_xticks([])
      axis.set_yticks([])
    axes[r][0].set_ylabel(title, fontsize=9)
  return _save(figure, path)


def plot_reconstructions(originals, reconstructions, path: str) -> str:
  """Originals above their reconstructions (seed 001's figure)."""
  return _image_rows([("original", originals),
                      ("reconstruction", reconstructions)], path)


def plot_denoising(noisy, denoised, clean, path: str) -> str:
  """Noisy inputs, the model's denoised outputs, the clean images (seed 004)."""
  return _image_rows([("noisy", noisy), ("denoised", denoised),
                      ("clean", clean)], path)


def plot_grid(images, path: str, title: str, columns: int | None = None) -> str:
  """A square grid of images, e.g. prior samples (seed 000) or a manifold."""
  columns = columns or int(np.ceil(np.sqrt(len(images))))
  figure = plt.figure(figsize=(8, 8))
  _show(plt.gca(), tile(images, columns))
  plt.title(title)
  plt.axis("off")
  return _save(figure, path)


def plot_latent_scatter(points: np.ndarray, labels: np.ndarray, path: str,
                        axis_names=("z[0]", "z[1]")) -> str:
  """Test-set latent means in 2-D, coloured by label."""
  figure = plt.figure(figsize=(8, 7))
  scatter = plt.scatter(points[:, 0], points[:, 1], c=labels, s=2,
                        cmap="tab10")
  plt.colorbar(scatter, label="label")
  plt.xlabel(axis_names[0])
  plt.ylabel(axis_names[1])
  plt.title("test-set latent means")
  return _save(figure, path)


def plot_loss_curves(metrics: dict[str, dict[int, dict[str, float]]],
                     path: str) -> str:
  """Training loss and test negative ELBO against the step."""
  figure = plt.figure(figsize=(8, 5))
  train = metrics.get("train", {})
  if train:
    steps = sorted(train)
    plt.plot(steps, [train[s]["loss"] for s in steps], label="train loss")
  evaluation = {step: values for step, values in metrics.get("eval", {}).items()
                if "elbo" in values}
  if evaluation:
    steps = sorted(evaluation)
    plt.plot(steps, [-evaluation[s]["elbo"] for s in steps], "o-",
             label="test -ELBO")
  plt.xlabel("step")
  plt.ylabel("nats per example")
  plt.legend()
  plt.grid(alpha=0.3)
  plt.title("loss")
  return _save(figure, path)


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
  quantiles = [statistics.NormalDist().inv_cdf(q)
               for q in np.linspace(0.05, 0.95, steps)]
  codes = np.repeat(np.asarray(z_mean, np.float32)[np.newaxis],
                    len(order) * steps, axis=0)
  for row, unit in enumerate(order):
    codes[row * steps:(row + 1) * steps, unit] = quantiles
  return codes, order


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
