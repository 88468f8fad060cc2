r"""Draws samples from an exported SavedModel (no vae-engine model code needed).

    vae-engine sample --saved_model=/tmp/conv/export/4680 --num=64 \
        --output=/tmp/samples   # writes /tmp/samples.png and /tmp/samples.npy
    vae-engine sample --saved_model=/tmp/cvae/export/4680 --label=7

Samples are drawn in chunks and streamed into the `.npy` (float32 pixel
means, [num, H, W, C]), so memory does not grow with --num; the disk must
hold them (checked first). The `.png` shows the first 400.
"""

from engine.cli import tool  # First: TensorFlow's quiet import.

from absl import flags

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """The tool's flags, on `fv` (absl's global ones for the command)."""
  flags.DEFINE_string("saved_model", None,
                      "An export directory (one version).", required=True,
                      flag_values=fv)
  flags.DEFINE_integer("num", 64, "How many samples.", lower_bound=1,
                       upper_bound=2**31 - 1, flag_values=fv)
  flags.DEFINE_integer("label", None,
                       "The class to sample, for a conditional model's "
                       "export (required there, refused elsewhere).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_string("output", "samples",
                      "Output path without extension: writes .png and .npy "
                      "(its directory is created if needed).", flag_values=fv)


# Rows drawn per signature call: bounded in bytes, so any image size fits.
_CHUNK_BYTES = 64 << 20
_SHOWN = 400


def main(argv):
  del argv
  import os

  import numpy as np

  from engine.viz import image_grids
  from engine.io import files
  from engine.run import preflight
  from engine.errors import UserError, quoted
  from engine.serving.loaded import Exported

  exported = Exported.load(FLAGS.saved_model)
  model = quoted(FLAGS.saved_model)
  if "sample" not in exported.loaded.signatures:
    raise UserError(f"--saved_model={model}: has no 'sample' signature")
  conditional = exported.num_classes > 0
  if conditional != (FLAGS.label is not None):
    raise UserError(
        f"--label: {model} is a conditional model's export; pass "
        "--label=CLASS" if conditional else
        f"--label={FLAGS.label}: {model} is not conditional")
  if conditional and FLAGS.label >= exported.num_classes:
    raise UserError(f"--label={FLAGS.label}: not a class of the model "
                    f"({exported.num_classes} classes)")
  directory = os.path.dirname(FLAGS.output) or "."
  preflight.writable_directory("output", directory)
  shape = (FLAGS.num, *exported.image_shape)
  preflight.check_free_space("output", directory,
                             4 * int(np.prod(shape, dtype=np.int64)),
                             f"{FLAGS.num:,} float32 samples")
  chunk = max(1, _CHUNK_BYTES // (8 * int(np.prod(exported.image_shape))))
  shown = []

  def chunks():
    for start in range(0, FLAGS.num, chunk):
      count = min(chunk, FLAGS.num - start)
      images = exported.sample(count, FLAGS.label)["images"].numpy()
      if len(shown) * chunk < _SHOWN:
        shown.append(images[:_SHOWN])
      yield images

  files.write_npy_chunks(FLAGS.output + ".npy", shape, np.float32, chunks())
  grid = np.concatenate(shown)[:_SHOWN]
  image_grids.plot_grid(grid, FLAGS.output + ".png",
                    f"{len(grid)} of {FLAGS.num} samples from "
                    f"{FLAGS.saved_model}"
                    + (f", label {FLAGS.label}" if conditional else ""))
  print(f"wrote {FLAGS.output}.png and {FLAGS.output}.npy {shape}")



def cli() -> None:
  """The `vae-engine sample` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
