"""Draws samples from an exported SavedModel (no vae-engine model code needed).

    python tools/sample.py --saved_model=/tmp/conv/export/4680 --num=64 \
        --output=/tmp/samples   # writes /tmp/samples.png and /tmp/samples.npy
"""

import _entry  # noqa: F401  (sets up the import path)

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "An export directory (one version).",
                    required=True)
flags.DEFINE_integer("num", 64, "How many samples.", lower_bound=1)
flags.DEFINE_string("output", "samples",
                    "Output path without extension: writes .png and .npy.")


def main(argv):
  del argv
  import numpy as np
  import tensorflow as tf

  from engine import figures
  from engine.errors import UserError

  try:
    loaded = tf.saved_model.load(FLAGS.saved_model)
  except (OSError, ValueError, tf.errors.OpError) as e:
    raise UserError(f"--saved_model={FLAGS.saved_model}: cannot load it "
                    f"({str(e).splitlines()[0][:160]})") from None
  if "sample" not in loaded.signatures:
    raise UserError(f"--saved_model={FLAGS.saved_model}: has no 'sample' "
                    "signature")
  images = loaded.signatures["sample"](num=tf.constant(FLAGS.num))["images"]
  images = images.numpy()
  np.save(FLAGS.output + ".npy", images)
  figures.plot_grid(images, FLAGS.output + ".png",
                    f"{FLAGS.num} samples from {FLAGS.saved_model}")
  print(f"wrote {FLAGS.output}.png and {FLAGS.output}.npy "
        f"{tuple(images.shape)}")


if __name__ == "__main__":
  _entry.run_tool(main)
