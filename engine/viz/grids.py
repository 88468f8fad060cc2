"""Figures of decoded images drawn pixel for pixel: the latent manifold, the
traversals and the interpolations.

A grid of tiles fills an axes whose size in screen pixels is a whole multiple
of the grid's, at a whole-pixel position, and is drawn with
interpolation="nearest": each image pixel becomes a square block of screen
pixels, so thin strokes do not alias into stripes, as they do when a grid is
resampled to fit an arbitrary figure size. The figures are therefore laid out
in pixels, and saved without `bbox_inches="tight"` (which would move the
axes by a fraction of a pixel).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from engine.viz import plots  # Also picks the Agg backend.

# Margins around a grid's axes, in screen pixels: room for the tick labels
# and axis labels on the left and below, and for the title above.
LEFT, RIGHT, TOP, BOTTOM = 72, 28, 40, 56
# Room above the interpolations' axes for a caption under the title, and the
# gap that sets the original images apart from the decoded path.
CAPTION, GAP = 24, 12
# Each grid is magnified by the largest whole factor that keeps it about this
# wide (never below 1: one image pixel per screen pixel at least).
MANIFOLD_WIDTH, ROWS_WIDTH = 1000, 800


def magnification(grid_pixels: int, width: int) -> int:
  """The whole factor that brings `grid_pixels` closest to `width`, from
  below (at least 1)."""
  return max(1, width // grid_pixels)


class PixelLayout:
  """A figure of `width` x `height` screen pixels, its axes placed in pixels.

  Args:
    width: Figure width in pixels.
    height: Figure height in pixels.
  """

  def __init__(self, width: int, height: int):
    self.width, self.height = width, height
    self.figure = plt.figure(figsize=(width / plots.DPI, height / plots.DPI),
                             dpi=plots.DPI)

  def axes(self, left: int, top: int, width: int, height: int):
    """An axes `width` x `height` pixels, its top-left corner at (`left`,
    `top`) pixels from the figure's top-left."""
    return self.figure.add_axes((left / self.width,
                                 1 - (top + height) / self.height,
                                 width / self.width, height / self.height))


def draw_tiles(axis, grid: np.ndarray, extent: tuple) -> None:
  """Draws a tiled grid filling `axis`, each image pixel as one block.

  Args:
    axis: An axes a whole multiple of the grid's size (`PixelLayout.axes`).
    grid: [rows, cols] grey or [rows, cols, 3] colour pixels in [0, 1].
    extent: (left, right, bottom, top): the data coordinates of its edges.
  """
  grid = np.clip(grid, 0.0, 1.0)
  grey = dict(cmap="gray", vmin=0.0, vmax=1.0) if grid.ndim == 2 else {}
  axis.imshow(grid, interpolation="nearest", aspect="auto", extent=extent,
              **grey)
  # A frame, and tick marks on it, would be drawn over the outermost image
  # pixels: no frame, and the ticks a little outside the image.
  axis.spines[:].set_visible(False)
  axis.spines[:].set_position(("outward", 2))


def tile_extent(rows: int, columns: int) -> tuple:
  """Data coordinates in which tile (r, c) is centred on (c, r)."""
  return (-0.5, columns - 0.5, rows - 0.5, -0.5)


def manifold_figure(images, extent, axis_names=("z[0]", "z[1]"),
                    title: str = "Decoded images across the latent space"):
  """The decoded grid of `plots.manifold_latents`, with latent values on the
  axes (as the Keras VAE tutorial's `plot_latent_space`).

  Args:
    images: [size * size, rows, cols(, channels)] decoded images, row-major,
      top row at the largest second coordinate.
    extent: [[x_low, x_high], [y_low, y_high]]: the first and last grid
      points along each axis (each tile is centred on the point it decodes).
    axis_names: Labels of the x and y axes.
    title: The figure's title.

  Returns:
    The matplotlib figure.
  """
  size = int(round(np.sqrt(len(images))))
  grid = plots.tile(images, size)
  scale = magnification(max(grid.shape[:2]), MANIFOLD_WIDTH)
  height, width = grid.shape[0] * scale, grid.shape[1] * scale
  layout = PixelLayout(LEFT + width + RIGHT, TOP + height + BOTTOM)
  axis = layout.axes(LEFT, TOP, width, height)
  (x_low, x_high), (y_low, y_high) = np.asarray(extent, float)
  half_x = (x_high - x_low) / (2 * max(size - 1, 1))
  half_y = (y_high - y_low) / (2 * max(size - 1, 1))
  draw_tiles(axis, grid, (x_low - half_x, x_high + half_x,
                          y_low - half_y, y_high + half_y))
  axis.set_xlabel(axis_names[0])
  axis.set_ylabel(axis_names[1])
  axis.set_title(title)
  return layout.figure


def traversal_figure(images, units, values,
                     title: str = "Changing one latent dimension at a time"):
  """One row per latent unit, that unit set to each of `values` in turn.

  Args:
    images: [len(units) * len(values), rows, cols(, channels)], row-major.
    units: The unit each row changes.
    values: The value each column gives it.
    title: The figure's title.

  Returns:
    The matplotlib figure.
  """
  columns = len(values)
  grid = plots.tile(images, columns)
  scale = magnification(grid.shape[1], ROWS_WIDTH)
  height, width = grid.shape[0] * scale, grid.shape[1] * scale
  layout = PixelLayout(LEFT + width + RIGHT, TOP + height + BOTTOM)
  axis = layout.axes(LEFT, TOP, width, height)
  draw_tiles(axis, grid, tile_extent(len(units), columns))
  # Rounded first, so that a value a hair below zero is not "-0.00".
  axis.set_xticks(range(columns),
                  [f"{round(v, 2) + 0.0:.2f}" for v in values])
  axis.set_yticks(range(len(units)), [f"z[{u}]" for u in units])
  axis.set_xlabel("value given to that dimension (the others: a test "
                  "image's code)")
  axis.set_ylabel("latent dimension")
  axis.set_title(title)
  return layout.figure


def interpolation_figure(starts, paths, ends,
                         title: str = "Interpolating between two test images"):
  """Each row: a test image, the decoded straight line between its code and
  another's, and that other image.

  Args:
    starts: [pairs, rows, cols(, channels)] the images on the left.
    paths: [pairs * steps, rows, cols(, channels)] decoded, row-major.
    ends: [pairs, rows, cols(, channels)] the images on the right.
    title: The figure's title.

  Returns:
    The matplotlib figure.
  """
  pairs = len(starts)
  steps = len(paths) // pairs
  left_grid, right_grid = plots.tile(starts, 1), plots.tile(ends, 1)
  path_grid = plots.tile(paths, steps)
  tile_width = left_grid.shape[1]
  scale = magnification((steps + 2) * tile_width, ROWS_WIDTH)
  height, side = path_grid.shape[0] * scale, tile_width * scale
  width = path_grid.shape[1] * scale
  layout = PixelLayout(LEFT + side + GAP + width + GAP + side + RIGHT,
                       TOP + CAPTION + height + BOTTOM)
  top = TOP + CAPTION
  left = layout.axes(LEFT, top, side, height)
  middle = layout.axes(LEFT + side + GAP, top, width, height)
  right = layout.axes(LEFT + side + 2 * GAP + width, top, side, height)
  for axis, grid in ((left, left_grid), (right, right_grid)):
    draw_tiles(axis, grid, tile_extent(pairs, 1))
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title("test image", fontsize=9)
  draw_tiles(middle, path_grid, tile_extent(pairs, steps))
  middle.set_xticks(range(steps),
                    [f"{t:g}" for t in np.linspace(0.0, 1.0, steps)])
  middle.set_yticks([])
  middle.set_xlabel("fraction of the way from the left image's code to the "
                    "right's")
  middle.set_title("decoded along the straight line between their codes",
                   fontsize=9)
  layout.figure.suptitle(title, y=1 - 8 / layout.height, va="top")
  return layout.figure


def plot_manifold(images, extent, path: str, **kwargs) -> str:
  """Writes `manifold_figure` as a PNG."""
  return plots.save_figure(manifold_figure(images, extent, **kwargs), path,
                           tight=False)


def plot_traversals(images, units, values, path: str, **kwargs) -> str:
  """Writes `traversal_figure` as a PNG."""
  return plots.save_figure(traversal_figure(images, units, values, **kwargs),
                           path, tight=False)


def plot_interpolations(starts, paths, ends, path: str, **kwargs) -> str:
  """Writes `interpolation_figure` as a PNG."""
  return plots.save_figure(
      interpolation_figure(starts, paths, ends, **kwargs), path, tight=False)
