"""Draws a run's figures from a checkpoint or from an exported SavedModel.

    python tools/plot.py --model_dir=/tmp/conv                 # latest checkpoint
    python tools/plot.py --saved_model=/tmp/conv/export/4680 \
        --data_dir=path/to/mnist --output_dir=/tmp/figs        # an export

Test data comes from --dataset / --data_dir, defaulting to the run's own.
"""

import _entry  # noqa: F401  (sets up the import path)

from absl import flags
import numpy as np

import flags as engine_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A run directory (uses a checkpoint).")
flags.DEFINE_string("checkpoint", None, "Checkpoint path (default: latest).")
flags.DEFINE_string("saved_model", None, "An export directory (one version).")
flags.DEFINE_string("output_dir", None,
                    "Where to write PNGs (default: <model_dir>/figures).")
engine_flags.define_overrides(
    ("dataset", "data_dir", "binarize", "noise_factor"), FLAGS,
    what="the run's, or the engine's with --saved_model")
flags.DEFINE_integer("seed", 0, "Seeds the prior samples.")


def export_functions(loaded) -> tuple:
  """(encode, decode, latent_dim, num_classes) of a loaded export, as
  `run_figures.write_run_figures` takes them."""
  import tensorflow as tf

  encode_fn, decode_fn = (loaded.signatures["encode"],
                          loaded.signatures["decode"])
  latent_dim = int(decode_fn.structured_input_signature[1]["z"].shape[-1])
  # Exports older than conditional models have no `num_classes`.
  num_classes = (int(loaded.num_classes.numpy())
                 if hasattr(loaded, "num_classes") else 0)
  if not num_classes:
    return (lambda x, labels: encode_fn(images=tf.constant(x))[
                "z_mean"].numpy(),
            lambda z, labels: decode_fn(z=tf.constant(z))["images"].numpy(),
            latent_dim, 0)

  def label(labels):
    return tf.constant(np.asarray(labels), tf.int32)

  return (lambda x, labels: encode_fn(images=tf.constant(x),
                                      label=label(labels))["z_mean"].numpy(),
          lambda z, labels: decode_fn(z=tf.constant(z),
                                      label=label(labels))["images"].numpy(),
          latent_dim, num_classes)


def main(argv):
  del argv
  import dataclasses

  import tensorflow as tf

  from engine import checkpointing
  from engine import evaluation
  from engine import latent_units
  from engine import run_figures
  from engine import summaries
  from engine import build
  from engine.config import DataConfig, RunConfig, TrainConfig
  from engine.data import pipeline
  from engine.data import sources
  from engine.errors import UserError

  if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
    raise UserError("pass exactly one of --model_dir or --saved_model")
  data_config, metrics = DataConfig(), {}
  if FLAGS.model_dir:
    trained = checkpointing.load_trained_model(FLAGS.model_dir,
                                               FLAGS.checkpoint)
    encode, decode = evaluation.figure_functions(trained.vae)
    latent_dim = trained.vae.latent_dim
    num_classes = trained.vae.num_classes
    data_config = trained.config.data
    metrics = summaries.read_metrics(FLAGS.model_dir)
  else:
    try:
      loaded = tf.saved_model.load(FLAGS.saved_model)
    except (OSError, ValueError, tf.errors.OpError) as e:
      raise UserError(f"--saved_model={FLAGS.saved_model}: cannot load it "
                      f"({str(e).splitlines()[0][:160]})") from None
    encode, decode, latent_dim, num_classes = export_functions(loaded)
  overrides = {name: getattr(FLAGS, name)
               for name in ("dataset", "data_dir", "binarize", "noise_factor")
               if getattr(FLAGS, name) is not None}
  data_config = dataclasses.replace(data_config, **overrides)
  data = sources.load(data_config)
  options = build.pipeline_options(
      RunConfig(data=data_config, train=TrainConfig(seed=FLAGS.seed)),
      latent_dim=latent_dim, batch_size=len(data.test_images),
      samples_per_example=1)
  test = pipeline.real_examples(next(iter(pipeline.eval_dataset(
      pipeline.as_tensor(data.test_images),
      pipeline.as_tensor(data.test_labels), options))))
  output_dir = FLAGS.output_dir or (
      f"{FLAGS.model_dir}/figures" if FLAGS.model_dir else "figures")
  kl_per_unit = (latent_units.unit_statistics(
      trained.vae, test["inputs"],
      labels=test["labels"] if num_classes else None)[0]
                 if FLAGS.model_dir else None)
  if num_classes and np.any(test["labels"] < 0):
    raise UserError(f"the model is conditional on {num_classes} classes but "
                    f"{data.source} has unlabelled test images")
  paths = run_figures.write_run_figures(
      encode, decode, latent_dim, test["inputs"], test["targets"],
      test["labels"], metrics,
      output_dir, FLAGS.seed, denoising=data_config.noise_factor > 0,
      kl_per_unit=kl_per_unit, num_classes=num_classes)
  for path in paths:
    print(path)


if __name__ == "__main__":
  _entry.run_tool(main)
