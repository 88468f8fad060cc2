"""The matplotlib figures people judge a VAE by (PNG, Agg backend).

Pure plotting functions that take numpy arrays; `engine.viz.grids` and
`engine.viz.image_grids` draw the grids of images, `engine.viz.latents` makes
the latent codes they decode, and `engine.viz.figure_set` puts them together
for a run.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from engine.io import files  # noqa: E402

DPI = 100


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


def save_figure(figure, path: str, tight: bool = True) -> str:
  """Writes the PNG (on any TensorFlow filesystem) and closes the figure.

  Args:
    figure: A matplotlib figure.
    path: Where to write it.
    tight: Crop the figure to what it draws; False keeps its size (and the
      axes where the figure put them, to the pixel).

  Returns:
    `path`.
  """
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=DPI,
                 bbox_inches="tight" if tight else None)
  plt.close(figure)
  files.write_atomically(path, buffer.getvalue())
  return path


# Lighter than tab10's own grey (class 7).
UNLABELLED = (0.82, 0.82, 0.82, 1.0)


def latent_scatter_figure(points: np.ndarray, labels: np.ndarray,
                          axis_names=("z[0]", "z[1]"), class_names=None):
  """Test-set latent means in 2-D, coloured by class.

  Args:
    points: [N, 2] latent means in the plane's coordinates.
    labels: [N] their labels (-1: none).
    axis_names: Labels of the x and y axes.
    class_names: The name of each label (default: the label numbers).

  Returns:
    The matplotlib figure (800 x 650 pixels).
  """
  labels = np.asarray(labels)
  names = list(class_names or ())
  count = max(len(names), int(labels.max()) + 1)
  names += [str(k) for k in range(len(names), count)]  # Unnamed: numbers.
  figure, axis = plt.subplots(figsize=(8, 6.5), dpi=DPI, layout="constrained")
  # Up to 20 classes, distinct colours and a legend of names; beyond, a
  # colour scale.
  colours = plt.get_cmap("tab10" if count <= 10 else "tab20" if count <= 20
                         else "viridis")
  labelled = labels >= 0
  index = np.where(labelled, labels, 0)
  # A listed colour map takes whole indices, a continuous one [0, 1].
  rgba = colours(index if count <= 20 else index / max(count - 1, 1))
  rgba[~labelled] = UNLABELLED
  # One scatter in the data's order: no class is drawn over all the others.
  axis.scatter(points[:, 0], points[:, 1], c=rgba, s=3)
  if count <= 20:
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours(k),
                          label=names[k]) for k in range(count)]
    if not labelled.all():
      handles.append(plt.Line2D([], [], ls="", marker="o", color=UNLABELLED,
                                label="no label"))
    figure.legend(handles=handles, title="class", loc="outside right upper")
  else:
    bar = figure.colorbar(plt.cm.ScalarMappable(
        plt.Normalize(0, count - 1), colours), ax=axis, label="class")
    if class_names and count <= 40:
      bar.set_ticks(range(count), labels=names, fontsize=7)
  axis.set_xlabel(axis_names[0])
  axis.set_ylabel(axis_names[1])
  axis.set_title("Where the encoder puts the test images")
  return figure


def plot_latent_scatter(points: np.ndarray, labels: np.ndarray, path: str,
                        axis_names=("z[0]", "z[1]"), class_names=None) -> str:
  """Writes `latent_scatter_figure` as a PNG."""
  return save_figure(latent_scatter_figure(points, labels, axis_names,
                                           class_names), path, tight=False)


# The loss figure's panels: (title, metric). The total loss is the ELBO's
# negative where a record logs only the ELBO.
LOSS_PANELS = (("Total loss", "loss"), ("Reconstruction error",
                                        "reconstruction"),
               ("KL divergence from the prior", "kl"))


def _series(records: dict[int, dict[str, float]], key: str):
  """(steps, values) of `key` in {step: metrics}, where a step logs it."""
  values = {step: record[key] if key in record else -record["elbo"]
            for step, record in records.items()
            if key in record or (key == "loss" and "elbo" in record)}
  return sorted(values), [values[step] for step in sorted(values)]


def loss_figure(metrics: dict[str, dict[int, dict[str, float]]]):
  """Panels of the total loss, the reconstruction term and the KL term
  against the step, training and test where the run logged them.

  Args:
    metrics: {split: {step: metrics}} (`summaries.read_metrics`).

  Returns:
    The matplotlib figure.
  """
  splits = (("train", "train", "-"), ("eval", "test", "o-"))
  panels = [(title, key) for title, key in LOSS_PANELS
            if any(_series(metrics.get(split, {}), key)[0]
                   for split, _, _ in splits)]
  figure, axes = plt.subplots(
      1, max(len(panels), 1), figsize=(4.4 * max(len(panels), 1), 4),
      dpi=DPI, squeeze=False, layout="constrained")
  for axis, (title, key) in zip(axes[0], panels):
    for split, name, style in splits:
      steps, values = _series(metrics.get(split, {}), key)
      if steps:
        axis.plot(steps, values, style, markersize=4, label=name)
    axis.set_title(title)
    axis.set_xlabel("training step")
    axis.set_ylabel("nats per image")
    axis.grid(alpha=0.3)
    axis.legend()
  figure.suptitle("The loss and its two terms during training")
  return figure


def plot_loss_curves(metrics: dict[str, dict[int, dict[str, float]]],
                     path: str) -> str:
  """Writes `loss_figure` as a PNG."""
  return save_figure(loss_figure(metrics), path, tight=False)
