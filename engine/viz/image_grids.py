"""Figures of images in rows and columns, drawn pixel for pixel as
`engine.viz.grids` draws the latent space: samples, reconstructions, the
denoising rows, and a conditional model's samples per class and style grid.

The figures are laid out in screen pixels before anything is drawn, so the
labels are measured first: the margins fit class names of any length, and a
title wider than the tiles widens the figure rather than being cut off.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from engine.viz import grids
from engine.viz import plots

# Each grid is magnified by the largest whole factor that keeps it about this
# wide: ten 28 x 28 images a row at three times their size.
WIDTH = 1000
# matplotlib's default sizes (points) of tick labels and of a figure's title.
LABEL_SIZE, TITLE_SIZE = 10, 12
# In screen pixels: the margin where nothing is labelled, the height of a
# line of labels, and the room a tick mark and its pad take beside the tiles
# (the frame sits 2 pixels outside them, `grids.draw_tiles`).
EDGE, LINE, TICK = 20, 16, 14


def text_width(texts: Sequence[str], size: float = LABEL_SIZE) -> int:
  """Width in screen pixels of the widest of `texts` at `size` points."""
  font = FontProperties(size=size)
  widths = [TextToPath().get_text_width_height_descent(text, font, False)[0]
            for text in texts]
  return int(np.ceil(max(widths, default=0) * plots.DPI / 72))


def class_names(names: Sequence[str] | None, count: int) -> list[str]:
  """`count` names: `names` first, then the label numbers."""
  names = list(names or ())[:count]
  return names + [str(k) for k in range(len(names), count)]


def _layout(left: int, width: int, right: int, height: int, title: str):
  """(a `grids.PixelLayout` titled `title`, the left edge of its content):
  `left + width + right` pixels wide, or wider for the title, the content
  then centred under it."""
  need = text_width([title], TITLE_SIZE) + 2 * EDGE
  extra = max(0, need - (left + width + right))
  layout = grids.PixelLayout(left + width + right + extra, height)
  layout.figure.suptitle(title, y=1 - 8 / height, va="top")
  return layout, left + extra // 2


def _columns_below(names: Sequence[str], tile: int) -> int:
  """Room below tiles `tile` pixels wide for `names` as their labels and a
  line of axis label: across where the names fit, else upright."""
  width = text_width(names)
  return TICK + (LINE if width <= tile - 8 else width) + LINE + EDGE // 2


def _label_columns(axis, names: Sequence[str], tile: int) -> None:
  """Names the columns of tiles `tile` pixels wide (see `_columns_below`)."""
  axis.set_xticks(range(len(names)), names,
                  rotation=0 if text_width(names) <= tile - 8 else 90)
  axis.set_xlabel("class")


def grid_figure(images, title: str, columns: int | None = None,
                row_names: Sequence[str] | None = None,
                column_names: Sequence[str] | None = None):
  """A grid of images, row-major, e.g. samples from the model.

  Args:
    images: [N, rows, cols(, channels)] pixels in [0, 1].
    title: The figure's title.
    columns: Images a row (default: a square grid).
    row_names: The class of each row, if the rows are classes.
    column_names: The class of each column, if the columns are classes.

  Returns:
    The matplotlib figure.
  """
  columns = columns or int(np.ceil(np.sqrt(len(images))))
  grid = plots.tile(images, columns)
  rows = -(-len(images) // columns)
  scale = grids.magnification(max(grid.shape[:2]), WIDTH)
  height, width = grid.shape[0] * scale, grid.shape[1] * scale
  left = EDGE + (LINE + text_width(row_names) + TICK if row_names else 0)
  bottom = (_columns_below(column_names, width // columns) if column_names
            else EDGE)
  layout, left = _layout(left, width, EDGE, grids.TOP + height + bottom,
                         title)
  axis = layout.axes(left, grids.TOP, width, height)
  grids.draw_tiles(axis, grid, grids.tile_extent(rows, columns))
  axis.set_xticks([])
  axis.set_yticks([])
  if row_names:
    axis.set_yticks(range(rows), row_names)
    axis.set_ylabel("class")
  if column_names:
    _label_columns(axis, column_names, width // columns)
  return layout.figure


def rows_figure(rows: Sequence[tuple[str, np.ndarray]], title: str):
  """Rows of images set apart, each named at its left, e.g. test images
  above their reconstructions.

  Args:
    rows: (name, [columns, rows, cols(, channels)] images) pairs, as many
      images in each.
    title: The figure's title.

  Returns:
    The matplotlib figure.
  """
  tiled = [plots.tile(images, len(images)) for _, images in rows]
  scale = grids.magnification(tiled[0].shape[1], WIDTH)
  height, width = tiled[0].shape[0] * scale, tiled[0].shape[1] * scale
  names = [name for name, _ in rows]
  layout, left = _layout(
      EDGE + text_width(names) + TICK, width, EDGE,
      grids.TOP + len(rows) * (height + grids.GAP) - grids.GAP + EDGE, title)
  for r, (name, grid) in enumerate(zip(names, tiled)):
    axis = layout.axes(left, grids.TOP + r * (height + grids.GAP), width,
                       height)
    grids.draw_tiles(axis, grid, grids.tile_extent(1, len(rows[r][1])))
    axis.set_xticks([])
    axis.set_yticks([0], [name])
  return layout.figure


def style_figure(originals, decoded, names: Sequence[str] | None = None,
                 title: str = "Each test image's style, drawn as every class"):
  """Test images beside their codes decoded under every label.

  Args:
    originals: [rows, rows, cols(, channels)] test images.
    decoded: [rows * classes, rows, cols(, channels)], row-major: row r is
      original r's code decoded under labels 0, 1, ...
    names: The name of each class (default: the label numbers).
    title: The figure's title.

  Returns:
    The matplotlib figure.
  """
  count = len(originals)
  classes = len(decoded) // count
  names = class_names(names, classes)
  left_grid, grid = plots.tile(originals, 1), plots.tile(decoded, classes)
  scale = grids.magnification(left_grid.shape[1] * (classes + 1), WIDTH)
  side, tile = left_grid.shape[1] * scale, grid.shape[1] * scale // classes
  width, height = tile * classes, grid.shape[0] * scale
  top = grids.TOP + grids.CAPTION
  layout, left = _layout(EDGE, side + grids.GAP + width, EDGE,
                         top + height + _columns_below(names, tile), title)
  first = layout.axes(left, top, side, height)
  rest = layout.axes(left + side + grids.GAP, top, width, height)
  grids.draw_tiles(first, left_grid, grids.tile_extent(count, 1))
  grids.draw_tiles(rest, grid, grids.tile_extent(count, classes))
  first.set_xticks([])
  first.set_yticks([])
  first.set_title("test image", fontsize=9)
  rest.set_yticks([])
  _label_columns(rest, names, tile)
  rest.set_title("its code decoded under each class's label", fontsize=9)
  return layout.figure


def plot_grid(images, path: str, title: str, **kwargs) -> str:
  """Writes `grid_figure` as a PNG."""
  return plots.save_figure(grid_figure(images, title, **kwargs), path,
                           tight=False)


def plot_reconstructions(originals, reconstructions, path: str) -> str:
  """Test images above the model's reconstructions of them."""
  return plots.save_figure(rows_figure(
      [("test images", originals), ("reconstructions", reconstructions)],
      "Test images and the model's reconstructions of them"), path,
                           tight=False)


def plot_denoising(noisy, denoised, clean, path: str) -> str:
  """Noisy inputs, the model's outputs for them, and the clean images."""
  return plots.save_figure(rows_figure(
      [("noisy inputs", noisy), ("model's outputs", denoised),
       ("clean originals", clean)],
      "Removing noise from test images"), path, tight=False)


def plot_style(originals, decoded, path: str, names=None) -> str:
  """Writes `style_figure` as a PNG."""
  return plots.save_figure(style_figure(originals, decoded, names), path,
                           tight=False)
