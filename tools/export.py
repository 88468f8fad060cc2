"""Exports a SavedModel from any checkpoint of a run.

    python tools/export.py --model_dir=/tmp/conv [--checkpoint=/tmp/conv/ckpt-400]
        [--export_dir=/tmp/conv/export]

Writes `<export_dir>/<step>/` (TF Serving layout) atomically; the run's saved
config says which model to rebuild, so no model flags are needed.
"""

import _entry  # noqa: F401  (sets up the import path)

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The run's directory.", required=True)
flags.DEFINE_string("checkpoint", None, "Checkpoint path (default: latest).")
flags.DEFINE_string("export_dir", None,
                    "Parent of the versioned exports (default: the run's "
                    "--export_dir, else <model_dir>/export).")


def main(argv):
  del argv
  import os

  from engine import checkpointing
  from engine import export

  trained = checkpointing.load_trained_model(FLAGS.model_dir,
                                             FLAGS.checkpoint)
  export_dir = (FLAGS.export_dir or trained.config.train.export_dir
                or os.path.join(FLAGS.model_dir, "export"))
  path = export.export(trained.vae, export_dir, trained.step,
                       denoising=trained.config.data.noise_factor > 0)
  print(f"exported {trained.checkpoint} to {path}")


if __name__ == "__main__":
  _entry.run_tool(main)
