"""A run's figures, from two functions and the test set.

`write_run_figures` computes what the figures of `engine.viz.plots`,
`engine.viz.grids` and `engine.viz.image_grids` need from `encode` (images
and labels to latent means) and `decode` (latents and labels to pixel
probabilities), so the same figures come from a live model, a checkpoint or
an exported SavedModel. An unconditional model's functions ignore the
labels; a conditional model's get the ones each figure names.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from engine.io import files
from engine.viz import grids
from engine.viz import image_grids
from engine.viz import latents
from engine.viz import plots

# (images [N, ...], labels [N]) -> latent means [N, D]
Encode = Callable[[np.ndarray, np.ndarray], np.ndarray]
# (latents [N, D], labels [N]) -> pixel probabilities [N, ...]
Decode = Callable[[np.ndarray, np.ndarray], np.ndarray]

SAMPLES_PER_CLASS, STYLE_ROWS = 10, 8


def encode_all(encode: Encode, images: np.ndarray, labels: np.ndarray,
               batch_size: int = 1000) -> np.ndarray:
  """Latent means of all `images` (float32 in [0, 1]), in batches."""
  return np.concatenate([
      np.asarray(encode(images[i:i + batch_size], labels[i:i + batch_size]))
      for i in range(0, len(images), batch_size)])


def class_sample_latents(latent_dim: int, num_classes: int, seed: int,
                         columns: int = SAMPLES_PER_CLASS
                         ) -> tuple[np.ndarray, np.ndarray]:
  """(z, labels) for samples per class: row y holds `columns` independent
  prior draws decoded under label y (row-major)."""
  z = np.random.default_rng(seed + 1).standard_normal(
      (num_classes * columns, latent_dim)).astype(np.float32)
  return z, np.repeat(np.arange(num_classes), columns)


def style_latents(z_means: np.ndarray, num_classes: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(z, labels) for the style grid: each code in `z_means` once under every
  label (row-major: one code per row, labels 0..K-1 across)."""
  return (np.repeat(np.asarray(z_means, np.float32), num_classes, axis=0),
          np.tile(np.arange(num_classes), len(z_means)))


def write_conditional_figures(decode: Decode, latent_dim: int,
                              num_classes: int, test_targets: np.ndarray,
                              z_means: np.ndarray, directory: str,
                              seed: int,
                              class_names: Sequence[str] | None = None
                              ) -> list[str]:
  """Samples per class, and the style grid: test images' codes (their
  posterior under their own label) decoded under every label; the classes
  named by `class_names` where given."""
  names = image_grids.class_names(class_names, num_classes)
  z, labels = class_sample_latents(latent_dim, num_classes, seed)
  paths = [image_grids.plot_grid(
      np.asarray(decode(z, labels)),
      os.path.join(directory, "samples_per_class.png"),
      "Random samples from the model, one class a row",
      columns=SAMPLES_PER_CLASS, row_names=names)]
  rows = min(STYLE_ROWS, len(z_means))
  codes, labels = style_latents(z_means[:rows], num_classes)
  paths.append(image_grids.plot_style(
      test_targets[:rows], np.asarray(decode(codes, labels)),
      os.path.join(directory, "style.png"), names))
  return paths


def write_run_figures(encode: Encode, decode: Decode, latent_dim: int,
                      test_inputs: np.ndarray, test_targets: np.ndarray,
                      test_labels: np.ndarray, metrics: dict, directory: str,
                      seed: int, denoising: bool,
                      kl_per_unit: np.ndarray | None = None,
                      num_classes: int = 0,
                      reconstruct: Decode | None = None,
                      sample: Decode | None = None,
                      sample_dim: int | None = None,
                      class_names: Sequence[str] | None = None) -> list[str]:
  """Writes every figure into `directory`.

  Args:
    encode: (images, labels) -> latent means.
    decode: (latents, labels) -> pixel probabilities.
    latent_dim: Size of the latent code.
    test_inputs: Test images as the encoder sees them (noisy when denoising),
      float32 in [0, 1].
    test_targets: The same images, clean.
    test_labels: Their labels.
    metrics: `summaries.read_metrics(model_dir)` ({} if there are no logs).
    directory: Output directory (created).
    seed: Seeds the prior samples.
    denoising: Also plot noisy / denoised / clean rows.
    kl_per_unit: Mean KL of each latent unit on the test set; with it, the
      traversals of the most informative units are drawn.
    num_classes: K of a conditional model (0: unconditional); with it, the
      samples-per-class and style figures are drawn, prior samples cycle
      through the labels, and the manifold is drawn under the first test
      image's label.
    reconstruct: (images, labels) -> pixel probabilities through the whole
      model, where `decode(encode(x))` is not that (a hierarchical model's
      figures of the latent space show its top group only).
    sample: (noise [N, sample_dim], labels) -> pixel probabilities of prior
      draws made from standard noise (default: `decode` of the noise).
    sample_dim: The width of `sample`'s noise (default: `latent_dim`).
    class_names: The name of each label, for the figures that show labels
      (default: the label numbers).

  Returns:
    The paths written.
  """
  files.gfile.makedirs(directory)
  test_labels = np.asarray(test_labels)
  z_means = encode_all(encode, test_inputs, test_labels)
  reconstructions = np.asarray(
      reconstruct(test_inputs[:10], test_labels[:10]) if reconstruct
      else decode(z_means[:10], test_labels[:10]))
  paths = [image_grids.plot_reconstructions(
      test_targets[:10], reconstructions,
      os.path.join(directory, "reconstructions.png"))]
  prior = np.random.default_rng(seed).standard_normal(
      (100, sample_dim or latent_dim)).astype(np.float32)
  prior_labels = np.arange(100) % max(num_classes, 1)
  paths.append(_samples(
      np.asarray((sample or decode)(prior, prior_labels)), num_classes,
      class_names, directory))
  origin, basis, names = latents.latent_plane(z_means)
  projected = (z_means - origin) @ np.linalg.pinv(basis)
  paths.append(_manifold(decode, (origin, basis, names), projected,
                         test_labels[0] if num_classes else None,
                         class_names, directory))
  if np.any(test_labels >= 0):  # Unlabelled images: -1.
    paths.append(plots.plot_latent_scatter(
        projected, test_labels,
        os.path.join(directory, "latent_scatter.png"), names, class_names))
  if kl_per_unit is not None:
    codes, units = latents.traversal_latents(z_means[0], kl_per_unit)
    paths.append(grids.plot_traversals(
        np.asarray(decode(codes, np.full(len(codes), test_labels[0]))),
        units, latents.traversal_values(),
        os.path.join(directory, "traversals.png")))
  pairs = min(latents.INTERPOLATION_PAIRS, len(z_means) // 2)
  if pairs:
    lines = latents.interpolation_latents(z_means[0:2 * pairs:2],
                                          z_means[1:2 * pairs:2])
    # A conditional model's lines keep the first image's label.
    paths.append(grids.plot_interpolations(
        test_targets[0:2 * pairs:2],
        np.asarray(decode(lines, np.repeat(test_labels[0:2 * pairs:2],
                                           latents.TRAVERSAL_STEPS))),
        test_targets[1:2 * pairs:2],
        os.path.join(directory, "interpolations.png")))
  if num_classes:
    paths += write_conditional_figures(decode, latent_dim, num_classes,
                                       test_targets, z_means, directory, seed,
                                       class_names)
  if denoising:
    paths.append(image_grids.plot_denoising(
        test_inputs[:10], reconstructions, test_targets[:10],
        os.path.join(directory, "denoising.png")))
  if metrics:
    paths.append(plots.plot_loss_curves(
        metrics, os.path.join(directory, "loss_curves.png")))
  return paths


def _samples(images: np.ndarray, num_classes: int,
             class_names: Sequence[str] | None, directory: str) -> str:
  """100 prior samples, 10 a row; a conditional model's cycle through the
  labels, so where 10 is a multiple of their number, each column is a
  class, and is named."""
  title = "Random samples from the model"
  names = None
  if num_classes and 10 % num_classes == 0:
    names = image_grids.class_names(class_names, num_classes) * (
        10 // num_classes)
    title += ", one class a column"
  elif num_classes:
    title += " (each class in turn)"
  return image_grids.plot_grid(images, os.path.join(directory, "samples.png"),
                               title, columns=10, column_names=names)


def _manifold(decode: Decode, plane: tuple, projected: np.ndarray, label,
              class_names: Sequence[str] | None, directory: str) -> str:
  """The decoded grid over where the test means lie in `plane` (a
  conditional model's under `label`, named in the title)."""
  origin, basis, names = plane
  extent = latents.manifold_extent(projected)
  codes = latents.manifold_latents(origin, basis, extent)
  title = "Decoded images across the latent space"
  if label is not None:
    title += " (class {})".format(
        class_names[int(label)] if class_names else int(label))
  return grids.plot_manifold(
      np.asarray(decode(codes, np.full(len(codes),
                                       0 if label is None else label))),
      extent, os.path.join(directory, "latent_manifold.png"),
      axis_names=names, title=title)
