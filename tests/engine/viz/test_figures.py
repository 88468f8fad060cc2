"""Figures: written for a real (short) run, non-blank, of sensible size;
grids of decoded images drawn pixel for pixel; axes and classes named."""

import io
import os

import matplotlib.colors
import matplotlib.image
import matplotlib.text
import numpy as np
import pytest

import models
from engine.viz import latents
from engine.viz import plots
from engine.viz import figure_set
from engine.viz import grids
from engine.viz import image_grids
from engine.run import runner
from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig


def _run(data_dir, model_dir, model):
  """A short run whose figures are checked: without XLA, which changes
  nothing a figure shows."""
  spec = models.get(model)
  config = RunConfig(
      data=DataConfig(data_dir=data_dir,
                      noise_factor=spec.default_noise_factor),
      model=ModelConfig(name=model, latent_dim=spec.default_latent_dim),
      train=TrainConfig(model_dir=str(model_dir), batch_size=64,
                        train_steps=60, log_every=20, eval_every=30,
                        checkpoint_every=0, jit_compile=False))
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
@pytest.mark.e2e
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
  origin, basis, names = latents.latent_plane(points)
  np.testing.assert_allclose(origin, points.mean(0), atol=1e-9)
  assert abs(abs(basis[0, 0]) - 5) < 0.3 and abs(abs(basis[1, 2]) - 2) < 0.2
  assert "PC1" in names[0]
  origin2, basis2, _ = latents.latent_plane(points[:, :2])
  np.testing.assert_array_equal(basis2, np.eye(2))
  grid = latents.manifold_latents(origin2, basis2, [[-2, 2], [-1, 3]],
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
  grid = next(z for z in decoded if len(z) == latents.MANIFOLD_SIZE ** 2)
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
  codes, units = latents.traversal_latents(z_mean, [0.1, 3.0, 0.0, 1.5],
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
  lines = latents.interpolation_latents(starts, ends, steps=5).reshape(2, 5, 3)
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


FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
           "Shirt", "Sneaker", "Bag", "Ankle boot")


def _binary_images(count, shape, seed=0):
  """Random black-and-white pixels: any resampling of them shows as grey."""
  return np.random.default_rng(seed).integers(
      0, 2, (count, *shape)).astype(np.float32)


def _saved(figure, path):
  """(the PNG's RGB pixels in [0, 1], each axes' pixel box (top, left,
  height, width) in them)."""
  figure.canvas.draw()
  height = figure.bbox.height
  boxes = []
  for axis in figure.axes:
    box = axis.get_window_extent()
    boxes.append((height - box.y1, box.x0, box.height, box.width))
  plots.save_figure(figure, str(path), tight=False)
  image = matplotlib.image.imread(str(path))[..., :3]
  assert image.shape[:2] == (round(height), round(figure.bbox.width))
  return image, boxes


def _assert_drawn_pixel_for_pixel(image, box, grid):
  """The axes at `box` shows `grid` magnified by a whole factor, each image
  pixel a uniform block (no resampling)."""
  top, left, height, width = np.asarray(box, float)
  # On whole pixels (up to the rounding of the axes' figure fractions).
  assert np.allclose((top, left, height, width),
                     np.round((top, left, height, width)), atol=1e-6), box
  top, left, height, width = (int(round(v)) for v in box)
  scale = width // grid.shape[1]
  assert scale >= 1 and (height, width) == (grid.shape[0] * scale,
                                            grid.shape[1] * scale), (
      box, grid.shape)
  shown = image[top:top + height, left:left + width]
  expected = np.repeat(np.repeat(grid, scale, 0), scale, 1)
  if expected.ndim == 2:
    expected = np.repeat(expected[..., np.newaxis], 3, -1)
  np.testing.assert_array_equal(shown, expected)


def _tick_labels(axis, which="x"):
  return [t.get_text() for t in getattr(axis, f"get_{which}ticklabels")()
          if t.get_text()]


@pytest.mark.parametrize("shape", [(28, 28, 1), (8, 8, 1), (12, 10, 3)])
def test_the_manifold_is_drawn_pixel_for_pixel_with_latent_axes(tmp_path,
                                                                shape):
  images = _binary_images(latents.MANIFOLD_SIZE ** 2, shape)
  figure = grids.manifold_figure(images, [[-3.9, 2.4], [-2.4, 2.4]])
  image, (box,) = _saved(figure, tmp_path / "manifold.png")
  _assert_drawn_pixel_for_pixel(image, box,
                                plots.tile(images, latents.MANIFOLD_SIZE))
  axis = figure.axes[0]
  assert "-3" in [label.replace("\N{MINUS SIGN}", "-")
                  for label in _tick_labels(axis)]
  assert _tick_labels(axis, "y")
  assert (axis.get_xlabel(), axis.get_ylabel()) == ("z[0]", "z[1]")
  assert len(axis.get_title()) < 50  # The ranges are on the axes.
  # Each tile is centred on the point it decodes.
  left, right = axis.get_xlim()
  tile_width = (right - left) / latents.MANIFOLD_SIZE
  np.testing.assert_allclose([left + tile_width / 2, right - tile_width / 2],
                             [-3.9, 2.4])


@pytest.mark.parametrize("shape", [(28, 28, 1), (12, 10, 3)])
def test_traversals_are_drawn_pixel_for_pixel_with_their_values(tmp_path,
                                                                shape):
  values = latents.traversal_values()
  images = _binary_images(3 * len(values), shape)
  figure = grids.traversal_figure(images, [4, 0, 7], values)
  image, (box,) = _saved(figure, tmp_path / "traversals.png")
  _assert_drawn_pixel_for_pixel(image, box, plots.tile(images, len(values)))
  axis = figure.axes[0]
  assert _tick_labels(axis) == [
      f"{v:.2f}".replace("-0.00", "0.00") for v in values]
  assert _tick_labels(axis, "y") == ["z[4]", "z[0]", "z[7]"]
  assert box[2] >= 3 * 2 * shape[0]  # Magnified: readable.


def test_interpolations_show_the_two_images_beside_the_decoded_path(tmp_path):
  starts, ends = _binary_images(4, (28, 28), 1), _binary_images(4, (28, 28), 2)
  path = _binary_images(4 * latents.TRAVERSAL_STEPS, (28, 28), 3)
  figure = grids.interpolation_figure(starts, path, ends)
  image, boxes = _saved(figure, tmp_path / "interpolations.png")
  for box, grid in zip(boxes, (plots.tile(starts, 1),
                               plots.tile(path, latents.TRAVERSAL_STEPS),
                               plots.tile(ends, 1))):
    _assert_drawn_pixel_for_pixel(image, box, grid)
  left, middle, right = boxes
  assert left[1] + left[3] < middle[1] and middle[1] + middle[3] < right[1]
  assert _tick_labels(figure.axes[1])[0] == "0"
  assert _tick_labels(figure.axes[1])[-1] == "1"


def test_the_latent_scatter_names_the_classes():
  points = np.random.default_rng(0).normal(size=(300, 2))
  labels = np.arange(300) % 10
  figure = plots.latent_scatter_figure(points, labels, class_names=FASHION)
  legend = figure.legends[0]
  assert [t.get_text() for t in legend.get_texts()] == list(FASHION)
  # Each point has its class's colour, the legend's.
  colours = figure.axes[0].collections[0].get_facecolors()
  for k in (0, 3, 9):
    np.testing.assert_allclose(
        colours[k], matplotlib.colors.to_rgba(
            legend.legend_handles[k].get_color()))
  plain = plots.latent_scatter_figure(points, labels)
  assert [t.get_text() for t in plain.legends[0].get_texts()] == list(
      "0123456789")
  many = [f"class {k}" for k in range(30)]
  wide = plots.latent_scatter_figure(points, np.arange(300) % 30,
                                     class_names=many)
  assert _tick_labels(wide.axes[-1], "y") == many  # On the colour bar.


def test_the_loss_figure_has_a_panel_per_term_with_train_and_test():
  metrics = {"train": {s: {"loss": 200.0 - s, "reconstruction": 190.0 - s,
                           "kl": 10.0} for s in (10, 20, 30)},
             "eval": {20: {"elbo": -175.0, "reconstruction": 168.0,
                           "kl": 7.0},
                      30: {"sample_class_entropy": 2.0}}}
  figure = plots.loss_figure(metrics)
  assert [a.get_title() for a in figure.axes] == [
      "Total loss", "Reconstruction error", "KL divergence from the prior"]
  for axis in figure.axes:
    assert [line.get_label() for line in axis.get_lines()] == ["train",
                                                               "test"]
  test_total = figure.axes[0].get_lines()[1]
  assert list(test_total.get_xdata()) == [20]  # Steps without an ELBO: none.
  assert list(test_total.get_ydata()) == [175.0]  # -ELBO.
  only_train = plots.loss_figure({"train": {10: {"loss": 3.0}}})
  assert [a.get_title() for a in only_train.axes] == ["Total loss"]


def test_each_figure_has_its_default_size_and_names_the_classes(
    tmp_path, monkeypatch):
  """The figures of a 2-D model of 28x28 images, their pixel sizes fixed."""
  figures = {}
  save = plots.save_figure

  def keep(figure, path, tight=True):
    figures[os.path.basename(path)] = figure
    return save(figure, path, tight)

  monkeypatch.setattr(plots, "save_figure", keep)
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(200, 28, 28, 1)).astype(np.float32)
  means = rng.normal(size=(200, 2)).astype(np.float32)

  def encode(batch, labels):
    return means[:len(batch)]

  def decode(z, labels):
    return rng.uniform(size=(len(z), 28, 28, 1)).astype(np.float32)

  metrics = {"train": {s: {"loss": 9.0 - s, "reconstruction": 8.0 - s,
                           "kl": 1.0} for s in (1, 2)},
             "eval": {2: {"elbo": -7.0, "reconstruction": 6.0, "kl": 1.0}}}
  paths = figure_set.write_run_figures(
      encode, decode, 2, images, images, np.arange(200) % 10, metrics,
      str(tmp_path), seed=0, denoising=False, kl_per_unit=np.ones(2),
      class_names=FASHION)
  sizes = {os.path.basename(p): matplotlib.image.imread(p).shape[:2]
           for p in paths}
  assert {name: sizes[name] for name in (
      "latent_manifold.png", "traversals.png", "interpolations.png",
      "latent_scatter.png", "loss_curves.png", "samples.png",
      "reconstructions.png")} == {
          "latent_manifold.png": (936, 940),  # 840 x 840 pixels of tiles.
          "traversals.png": (208, 716),  # Tiles at twice their size.
          "interpolations.png": (456, 852),
          "latent_scatter.png": (650, 800),
          "loss_curves.png": (400, 1320),
          "samples.png": (900, 880),  # 840 x 840 pixels of tiles.
          "reconstructions.png": (240, 1002)}  # Rows of 84-pixel tiles.
  for name in ("latent_manifold.png", "traversals.png"):
    axis = figures[name].axes[0]
    assert _tick_labels(axis) and _tick_labels(axis, "y"), name
  legend = figures["latent_scatter.png"].legends[0]
  assert [t.get_text() for t in legend.get_texts()] == list(FASHION)


@pytest.fixture(scope="module")
def fashion_figures(tmp_path_factory):
  """A conditional denoising run's figures for Fashion-MNIST-shaped images,
  black-and-white pixels throughout: ({PNG name: figure}, {"inputs":
  noisy test images, "targets": clean ones, "decoded": each `decode` call's
  output, in order})."""
  figures, decoded = {}, []
  save = plots.save_figure

  def keep(figure, path, tight=True):
    figures[os.path.basename(path)] = figure
    return save(figure, path, tight)

  def encode(batch, labels):
    return np.random.default_rng(len(batch)).normal(size=(len(batch), 2))

  def decode(z, labels):
    decoded.append(_binary_images(len(z), (28, 28, 1), 10 + len(decoded)))
    return decoded[-1]

  inputs = _binary_images(20, (28, 28, 1), 1)
  targets = _binary_images(20, (28, 28, 1), 2)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(plots, "save_figure", keep)
    figure_set.write_run_figures(
        encode, decode, 2, inputs, targets, np.arange(20) % 10, {},
        str(tmp_path_factory.mktemp("figures")), seed=0, denoising=True,
        num_classes=10, class_names=FASHION)
  return figures, dict(inputs=inputs, targets=targets, decoded=decoded)


def _fashion_figure(fashion_figures, name, tmp_path, size):
  """(the PNG pixels, axes boxes and axes of the run's figure `name`,
  saved again), its default size (height, width) checked."""
  figure = fashion_figures[0][name]
  image, boxes = _saved(figure, tmp_path / name)
  assert image.shape[:2] == size
  # A title a newcomer reads: short, without the code's words for things.
  title = figure.get_suptitle()
  assert 10 < len(title) < 60 and not any(
      word in title for word in ("prior", "label y", "0..")), title
  return image, boxes, figure.axes


def test_samples_are_drawn_pixel_for_pixel_a_class_a_column(fashion_figures,
                                                            tmp_path):
  image, (box,), (axis,) = _fashion_figure(fashion_figures, "samples.png",
                                           tmp_path, (936, 880))
  samples = fashion_figures[1]["decoded"][1]  # After the reconstructions.
  _assert_drawn_pixel_for_pixel(image, box, plots.tile(samples, 10))
  assert _tick_labels(axis) == list(FASHION)  # Labels 0..9 in turn.


def test_reconstructions_are_drawn_pixel_for_pixel_under_the_test_images(
    fashion_figures, tmp_path):
  image, boxes, axes = _fashion_figure(fashion_figures, "reconstructions.png",
                                       tmp_path, (240, 1002))
  images = fashion_figures[1]
  for box, row in zip(boxes, (images["targets"][:10], images["decoded"][0])):
    _assert_drawn_pixel_for_pixel(image, box, plots.tile(row, 10))
  assert [_tick_labels(axis, "y") for axis in axes] == [
      ["test images"], ["reconstructions"]]
  assert boxes[0][0] + boxes[0][2] < boxes[1][0]  # Apart, the first above.


def test_denoising_is_drawn_pixel_for_pixel_in_labelled_rows(fashion_figures,
                                                             tmp_path):
  image, boxes, axes = _fashion_figure(fashion_figures, "denoising.png",
                                       tmp_path, (336, 1006))
  images = fashion_figures[1]
  for box, row in zip(boxes, (images["inputs"][:10], images["decoded"][0],
                              images["targets"][:10])):
    _assert_drawn_pixel_for_pixel(image, box, plots.tile(row, 10))
  assert [_tick_labels(axis, "y") for axis in axes] == [
      ["noisy inputs"], ["model's outputs"], ["clean originals"]]


def test_samples_per_class_are_drawn_pixel_for_pixel_a_class_a_row(
    fashion_figures, tmp_path):
  image, (box,), (axis,) = _fashion_figure(
      fashion_figures, "samples_per_class.png", tmp_path, (900, 985))
  per_class = fashion_figures[1]["decoded"][-2]
  _assert_drawn_pixel_for_pixel(image, box, plots.tile(per_class, 10))
  assert _tick_labels(axis, "y") == list(FASHION)


def test_the_style_grid_is_drawn_pixel_for_pixel_a_class_a_column(
    fashion_figures, tmp_path):
  image, (left, right), axes = _fashion_figure(fashion_figures, "style.png",
                                               tmp_path, (792, 976))
  images = fashion_figures[1]
  _assert_drawn_pixel_for_pixel(image, left,
                                plots.tile(images["targets"][:8], 1))
  _assert_drawn_pixel_for_pixel(image, right,
                                plots.tile(images["decoded"][-1], 10))
  assert left[1] + left[3] < right[1]  # The test images set apart.
  assert _tick_labels(axes[1]) == list(FASHION)


def test_plot_grid_draws_colour_pixel_for_pixel_under_a_long_title(
    tmp_path, monkeypatch):
  """`vae-engine sample`'s figure: any number of images, any title."""
  figures = []
  save = plots.save_figure
  monkeypatch.setattr(plots, "save_figure", lambda figure, path, tight=True: (
      figures.append(figure), save(figure, path, tight))[1])
  images = _binary_images(64, (12, 10, 3))
  title = ("64 of 100000 samples from " + "/a/rather/long/path" * 6
           + "/export/123456")  # Wider than the tiles.
  image_grids.plot_grid(images, str(tmp_path / "grid.png"), title)
  image, (box,) = _saved(figures[0], tmp_path / "again.png")
  _assert_drawn_pixel_for_pixel(image, box, plots.tile(images, 8))
  (text,) = [t for t in figures[0].findobj(matplotlib.text.Text)
             if t.get_text() == title]
  extent = text.get_window_extent()
  assert 0 <= extent.x0 and extent.x1 <= image.shape[1]  # All of it shown.
