"""Draws samples from an exported SavedModel (no vae-engine model code needed).

    python tools/sample.py --saved_model=/tmp/conv/export/4680 --num=64 \
        --output=/tmp/samples   # writes /tmp/samples.png and /tmp/samples.npy
    python tools/sample.py --saved_model=/tmp/cvae/export/4680 --label=7
"""

import _entry  # noqa: F401  (sets up the import path)

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "An export directory (one version).",
                    required=True)
flags.DEFINE_integer("num", 64, "How many samples.", lower_bound=1)
flags.DEFINE_integer("label", None,
                     "The class to sample, for a conditional model's export "
                     "(required there, refused elsewhere).", lower_bound=0)
flags.DEFINE_string("output", "samples",
                    "Output path without extension: writes .png and .npy.")


def main(argv):
  del argv
  import numpy as np

  from engine import figures
  from engine.errors import UserError
  from engine.exported import Exported

  exported = Exported.load(FLAGS.saved_model)
  if "sample" not in exported.loaded.signatures:
    raise UserError(f"--saved_model={FLAGS.saved_model}: has no 'sample' "
                    "signature")
  conditional = exported.num_classes > 0
  if conditional != (FLAGS.label is not None):
    raise UserError(
        f"--label: {FLAGS.saved_model} is a conditional model's export; "
        "pass --label=CLASS" if conditional else
        f"--label={FLAGS.label}: {FLAGS.saved_model} is not conditional")
  if conditional and FLAGS.label >= exported.num_classes:
    raise UserError(f"--label={FLAGS.label}: not a class of the model "
                    f"({exported.num_classes} classes)")
  images = exported.sample(FLAGS.num, FLAGS.label)["images"].numpy()
  np.save(FLAGS.output + ".npy", images)
  figures.plot_grid(images, FLAGS.output + ".png",
                    f"{FLAGS.num} samples from {FLAGS.saved_model}"
                    + (f", label {FLAGS.label}" if conditional else ""))
  print(f"wrote {FLAGS.output}.png and {FLAGS.output}.npy "
        f"{tuple(images.shape)}")


if __name__ == "__main__":
  _entry.run_tool(main)
