r"""Test-set ELBO, importance-weighted NLL (nats, bits/dim) and active units.

    vae-engine evaluate --model_dir=/tmp/iwae              # latest ckpt
    vae-engine evaluate --model_dir=/tmp/iwae --checkpoint=/tmp/iwae/ckpt-30000
    vae-engine evaluate --saved_model=/tmp/iwae/export/30000 \
        --data_dir=path/to/mnist --binarize=dynamic

Takes the engine's flags. Model, likelihood and data come from the run's
config.json (no --model_dir: where these flags train); a flag given
overrides the data settings (--data_dir, --binarize, --batch_size, ...), a
contradicting model flag is an error. --eval_nll_samples is K (default
5000, Burda et al.'s); the NLL is compiled with XLA where training would be
(never an export's). --sample_quality adds the classifier's sample scores.
A conditional model's NLL is -log p(x | y). Prints a table and writes it as
JSON: --output_json, else <model_dir>/eval-<step>-k<K>.json, or beside an
export, <export_dir>/<step>-eval-k<K>.json.
"""

from engine.cli import tool  # First: TensorFlow's quiet import.

from absl import flags as absl_flags

import flags

FLAGS = absl_flags.FLAGS


def define_flags(fv: absl_flags.FlagValues = FLAGS) -> None:
  """The tool's flags, on `fv` (absl's global ones for the command)."""
  flags.define(fv)
  absl_flags.DEFINE_string("checkpoint", None,
                           "Checkpoint path (default: the latest in "
                           "--model_dir).", flag_values=fv)
  absl_flags.DEFINE_string("saved_model", None,
                           "Evaluate an export (one version directory) "
                           "instead of a checkpoint.", flag_values=fv)
  absl_flags.DEFINE_string("output_json", None,
                           "Where to write the results (default: "
                           "<model_dir>/eval-<step>-k<K>.json, or for "
                           "--saved_model=<export_dir>/<step>, "
                           "<export_dir>/<step>-eval-k<K>.json).",
                           flag_values=fv)
  absl_flags.DEFINE_integer("max_test_examples", None,
                            "Evaluate only the first N test images.",
                            flag_values=fv)


def _check_output_writable() -> None:
  """Before the evaluation: where the results will be written can be
  written (a run directory on a read-only mount cannot)."""
  import os

  from engine.errors import UserError
  from engine.run import preflight

  if FLAGS.output_json:
    flag, directory = "output_json", os.path.dirname(
        os.path.abspath(FLAGS.output_json))
  elif FLAGS.saved_model:
    flag, directory = "saved_model", os.path.dirname(
        os.path.normpath(os.path.abspath(FLAGS.saved_model)))
  else:
    flag, directory = "model_dir", FLAGS.model_dir
  try:
    preflight.writable_directory(flag, directory)
  except UserError as e:
    if flag == "output_json":
      raise
    raise UserError(f"{str(e).split('; pass')[0]}: the results are written "
                    "there; pass --output_json=PATH to write them "
                    "elsewhere") from None


def main(argv):
  del argv
  import json
  import os
  import resource
  import time

  from engine.cli import evaluation_config
  from engine.data import pipeline
  from engine.data import sources
  from engine.devices import compilation
  from engine.devices import strategies
  from engine.errors import UserError, quoted
  from engine.eval import evaluator as evaluator_lib
  from engine.eval import likelihood
  from engine.eval import sample_quality
  from engine.io import files
  from engine.io import run_dir
  from engine.run import parts
  from engine.serving.loaded import Exported
  from models.base import decoder_floats

  started = time.perf_counter()
  config = evaluation_config.resolve(FLAGS)
  _check_output_writable()
  if config.train.eval_nll_samples < 1:
    raise UserError("--eval_nll_samples must be positive for evaluation")
  strategies.configure_devices(config.distribution)
  strategy = strategies.make_strategy(config.distribution)
  data = sources.load(config.data, config.train.seed)
  test_images, test_labels = data.test_images, data.test_labels
  if FLAGS.max_test_examples:
    test_images = test_images[:FLAGS.max_test_examples]
    test_labels = test_labels[:FLAGS.max_test_examples]
  batch_size = config.train.batch_size
  parts.check_batch_fits(batch_size, strategy, config.distribution.strategy)

  objective = parts.objective(config.model).for_evaluation()
  with strategy.scope():
    if FLAGS.saved_model:
      exported = Exported.load(FLAGS.saved_model)
      data.check_shape(exported.image_shape,
                       f"--saved_model={quoted(FLAGS.saved_model)}")
      if exported.hierarchical:
        raise UserError(
            f"--saved_model={quoted(FLAGS.saved_model)}: the export of a "
            "hierarchical model has no sampled log-densities to evaluate; "
            "pass the run's --model_dir instead")
      encode, log_likelihood = evaluator_lib.export_functions(
          exported, objective)
      # An export's input checks do not compile (see resolve_config).
      sampled, groups, jit_compile = None, (), False
      floats = exported.decoder_floats
      latent_dim, num_classes = exported.latent_dim, exported.num_classes
      source, step = FLAGS.saved_model, os.path.basename(
          os.path.normpath(FLAGS.saved_model))

      def decode(z, labels):
        return exported.decode(z, labels)["images"]

      # The run's cached classifier when --model_dir is given too (the same
      # classifier, the same scores), else one cached beside the export.
      cache_dir = (FLAGS.model_dir if FLAGS["model_dir"].present else
                   os.path.dirname(os.path.normpath(FLAGS.saved_model)))
    else:
      trained = run_dir.load_trained_model(FLAGS.model_dir, FLAGS.checkpoint)
      data.check_shape(trained.vae.image_shape,
                       f"--model_dir={quoted(FLAGS.model_dir)}")
      encode, log_likelihood = evaluator_lib.model_functions(
          trained.vae, objective)
      sampled = evaluator_lib.model_sampled_terms(trained.vae, objective)
      jit_compile = config.train.jit_compile
      if jit_compile is None:  # Auto: as training decides.
        jit_compile = compilation.xla_by_default(trained.vae)[0]
      groups, floats = trained.vae.latent_groups, decoder_floats(trained.vae)
      latent_dim = trained.vae.latent_dim
      num_classes = trained.vae.num_classes
      source, step = trained.checkpoint, trained.step
      # Ancestral prior draws (for one latent group: the decoder itself).
      decode = (lambda z, labels: trained.vae.decoder_probabilities(
          trained.vae.prior_sample(z), labels))
      cache_dir = FLAGS.model_dir
    elbo_evaluator = evaluator_lib.Evaluator(
        encode, log_likelihood, strategy, latent_dim,
        conditional=num_classes > 0, sampled=sampled,
        latent_groups=groups)
    evaluator = likelihood.ImportanceSampledEvaluator(
        encode, log_likelihood, strategy, data.image_shape,
        latent_dim, config.train.eval_nll_samples, batch_size,
        config.train.seed, conditional=num_classes > 0, sampled=sampled,
        jit_compile=jit_compile,
        rows_per_chunk=likelihood.rows_per_chunk(floats))
  parts.check_test_labels(num_classes, test_labels, data.source)

  eval_data = parts.eval_data(
      strategy, pipeline.as_tensor(test_images),
      pipeline.as_tensor(test_labels),
      parts.pipeline_options(config, latent_dim=latent_dim,
                             samples_per_example=1))
  elbo = elbo_evaluator.evaluate(eval_data)
  result = evaluator.evaluate(
      eval_data, total=len(test_images),
      progress=lambda line: print(line, flush=True))
  quality = {}
  if config.train.sample_quality:
    classifier = sample_quality.load_or_train(
        cache_dir, data.train_images, data.train_labels, data.test_images,
        data.test_labels, seed=config.train.seed)
    samples, sample_labels = sample_quality.prior_samples(
        decode, latent_dim, 10_000, config.train.seed, num_classes)
    quality = sample_quality.score(classifier, test_images, samples,
                                   sample_labels)
  seconds = time.perf_counter() - started
  peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

  record = {"source": str(source), "step": step,
            "dataset": data.source, "binarize": config.data.binarize,
            "strategy": config.distribution.strategy,
            "replicas": strategy.num_replicas_in_sync,
            "samples_per_chunk": evaluator.chunk, "xla": evaluator.jit_compile,
            "seconds": round(seconds, 1), "peak_rss_mb": round(peak_rss_mb),
            **result.to_dict(), "elbo": elbo["elbo"],
            "elbo_stderr": elbo["elbo_stderr"],
            "active_units": elbo["active_units"],
            **{name: value for name, value in elbo.items()
               if name.startswith(("active_units_z", "kl_z"))},
            "unit_variances": [float(v) for v in elbo["unit_variances"]],
            **quality}
  rows = [
      ("source", f"{source} (step {step})"),
      ("test images", f"{result.examples} from {data.source}, binarize="
                      f"{config.data.binarize}"),
      ("ELBO", f"{elbo['elbo']:.2f} ± {elbo['elbo_stderr']:.2f} nats"),
      (f"NLL (IWAE, K={result.num_samples})",
       f"{result.nll:.2f} ± {result.nll_stderr:.2f} nats"),
      ("bits/dim", f"{result.bits_per_dim:.4f}"),
      ("active units",
       f"{elbo['active_units']} / {latent_dim} (Cov_x E_q[u|x] > "
       f"{evaluator_lib.ACTIVE_UNIT_THRESHOLD})" + "".join(
           f"; z{index} {elbo[f'active_units_z{index}']} / {size}"
           for index, size in enumerate(groups, start=1)
           if f"active_units_z{index}" in elbo)),
      *([("sample class entropy",
          f"{quality['sample_class_entropy']:.3f} of "
          f"{quality['max_class_entropy']:.3f} nats (10,000 prior samples)"),
         ("classifier Fréchet distance",
          f"{quality['classifier_frechet_distance']:.2f} (test set vs "
          f"samples; classifier test accuracy "
          f"{quality['classifier_test_accuracy']:.4f})")] if quality else []),
      *([("conditional accuracy",
          f"{quality['conditional_accuracy']:.4f} (samples classified as "
          "the label they were drawn for)")]
        if "conditional_accuracy" in quality else []),
      ("runtime", f"{seconds:.1f} s on {strategy.num_replicas_in_sync} "
       f"replica(s), NLL {'with' if evaluator.jit_compile else 'without'} XLA"),
      ("peak memory", f"{peak_rss_mb:.0f} MB RSS"),
  ]
  width = max(len(name) for name, _ in rows)
  for name, value in rows:
    print(f"{name:<{width}}  {value}")
  output = FLAGS.output_json or (
      os.path.normpath(FLAGS.saved_model) + f"-eval-k{result.num_samples}.json"
      if FLAGS.saved_model else os.path.join(
          FLAGS.model_dir, f"eval-{step}-k{result.num_samples}.json"))
  if files.is_local(output):
    output = os.path.abspath(output)
  files.gfile.makedirs(os.path.dirname(output))
  files.write_atomically(output, json.dumps(record, indent=2))
  print(f"wrote {output}")


def cli() -> None:
  """The `vae-engine evaluate` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
