r"""Draws a run's figures from a checkpoint or from an exported SavedModel.

    vae-engine plot --model_dir=/tmp/conv                      # latest checkpoint
    vae-engine plot --saved_model=/tmp/conv/export/4680 \
        --data_dir=path/to/mnist --output_dir=/tmp/figs        # an export

Test data comes from --dataset / --data_dir, defaulting to the run's own.
"""

from engine.cli import tool  # First: TensorFlow's quiet import.

from absl import flags

import flags as engine_flags

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """The tool's flags, on `fv` (absl's global ones for the command)."""
  flags.DEFINE_string("model_dir", None,
                      "A run directory (uses a checkpoint).", flag_values=fv)
  flags.DEFINE_string("checkpoint", None,
                      "Checkpoint path (default: latest).", flag_values=fv)
  flags.DEFINE_string("saved_model", None,
                      "An export directory (one version).", flag_values=fv)
  flags.DEFINE_string("output_dir", None,
                      "Where to write PNGs (default: <model_dir>/figures).",
                      flag_values=fv)
  engine_flags.define_overrides(
      ("dataset", "data_dir", "binarize", "noise_factor"), fv,
      what="the run's, or the engine's with --saved_model")
  flags.DEFINE_integer("seed", 0, "Seeds the prior samples.", flag_values=fv)


def main(argv):
  del argv
  import dataclasses

  import numpy as np

  import tensorflow as tf

  from engine.config import DataConfig, RunConfig, TrainConfig
  from engine.data import pipeline
  from engine.data import sources
  from engine.errors import UserError, quoted
  from engine.eval import evaluator as evaluator_lib
  from engine.io import run_dir
  from engine.io import summaries
  from engine.run import evaluation
  from engine.io import run_lock
  from engine.run import parts
  from engine.run import preflight
  from engine.serving.loaded import Exported
  from engine.viz import figure_set

  if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
    raise UserError("pass exactly one of --model_dir or --saved_model")
  data_config, metrics = DataConfig(), {}
  output_dir = FLAGS.output_dir or (
      f"{FLAGS.model_dir}/figures" if FLAGS.model_dir else "figures")
  # Before any work: where the figures go must be writable, and inside a
  # run directory the run must not be writing too (its own figures).
  preflight.writable_directory("output_dir", output_dir)
  lock = FLAGS.model_dir and run_lock.acquire_if_inside(  # noqa: F841
      FLAGS.model_dir, output_dir, "model_dir", "vae-engine plot")
  if FLAGS.model_dir:
    trained = run_dir.load_trained_model(FLAGS.model_dir,
                                               FLAGS.checkpoint)
    encode, decode = evaluation.figure_functions(trained.vae)
    reconstruct, sample = evaluation.whole_model_functions(trained.vae)
    sample_dim = trained.vae.latent_dim
    latent_dim = trained.vae.top_dim  # A hierarchical model's top group.
    num_classes = trained.vae.num_classes
    data_config = trained.config.data
    metrics = summaries.read_metrics(FLAGS.model_dir)
  else:
    exported = Exported.load(FLAGS.saved_model)
    num_classes = exported.num_classes
    latent_dim = exported.group_sizes[-1]  # The top group's figures.
    reconstruct = sample = sample_dim = None
    if exported.hierarchical:  # Through the whole model: its signatures.

      def reconstruct(images, labels):
        del labels
        return exported.loaded.signatures["reconstruct"](
            images=tf.constant(images, tf.float32))["images"].numpy()

      def sample(noise, labels):
        del labels  # Drawn by the export itself, ancestrally.
        return exported.sample(len(noise))["images"].numpy()

    def encode(images, labels):
      return exported.encode(images, labels)["z_mean"].numpy()[
          :, exported.latent_dim - latent_dim:]

    def decode(z, labels):
      if exported.hierarchical:
        return exported.loaded.signatures["decode_top"](
            z_top=tf.constant(z, tf.float32))["images"].numpy()
      return exported.decode(np.asarray(z, np.float32),
                             labels)["images"].numpy()
  overrides = {name: getattr(FLAGS, name)
               for name in ("dataset", "data_dir", "binarize", "noise_factor")
               if getattr(FLAGS, name) is not None}
  data_config = dataclasses.replace(data_config, **overrides)
  data = sources.load(data_config)
  data.check_shape(
      trained.vae.image_shape if FLAGS.model_dir else exported.image_shape,
      f"--model_dir={quoted(FLAGS.model_dir)}" if FLAGS.model_dir else
      f"--saved_model={quoted(FLAGS.saved_model)}")
  options = parts.pipeline_options(
      RunConfig(data=data_config, train=TrainConfig(seed=FLAGS.seed)),
      latent_dim=latent_dim, batch_size=len(data.test_images),
      samples_per_example=1)
  test = pipeline.real_examples(next(iter(pipeline.eval_dataset(
      pipeline.as_tensor(data.test_images),
      pipeline.as_tensor(data.test_labels), options))))
  parts.check_test_labels(num_classes, test["labels"], data.source)
  kl_per_unit = None  # What each latent unit carries: from a checkpoint.
  if FLAGS.model_dir:
    objective = parts.objective(trained.config.model).for_evaluation()
    kl_per_unit = evaluator_lib.Evaluator(
        *evaluator_lib.model_functions(trained.vae, objective),
        tf.distribute.get_strategy(), trained.vae.latent_dim,
        conditional=num_classes > 0,
        sampled=evaluator_lib.model_sampled_terms(trained.vae, objective)
    ).evaluate(pipeline.eval_dataset(
        pipeline.as_tensor(data.test_images),
        pipeline.as_tensor(data.test_labels),
        dataclasses.replace(options, global_batch_size=500,
                            latent_dim=trained.vae.latent_dim)))[
                                "kl_per_unit"][trained.vae.top_group]
  paths = figure_set.write_run_figures(
      encode, decode, latent_dim, test["inputs"], test["targets"],
      test["labels"], metrics,
      output_dir, FLAGS.seed, denoising=bool(data_config.noise_factor),
      kl_per_unit=kl_per_unit, num_classes=num_classes,
      reconstruct=reconstruct, sample=sample, sample_dim=sample_dim,
      class_names=data.class_names)
  for path in paths:
    print(path)



def cli() -> None:
  """The `vae-engine plot` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
