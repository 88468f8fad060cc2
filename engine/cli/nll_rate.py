r"""Speed of the importance-sampled NLL, compiled with XLA against not.

    vae-engine nll_rate --data_dir=path/to/mnist --model=iwae_mlp \
        --images=300 --samples=5000 --batch_size=100

Estimates the test NLL of the first `--images` test images with K
`--samples` twice per round, the chunk compiled with XLA and not, in
alternating order, on one untrained model (the work does not depend on the
weights), and prints test images/sec, the decoder's matmul GFLOP/s and its
share of a float32 matmul peak measured in the same process, the ratio of
the two, and both estimates (equal up to float32 rounding). The decoder's
FLOPs are counted from its Dense layers (a model with convolutions gets no
GFLOP/s figure).
"""

from __future__ import annotations

import json
import statistics
import time

from absl import flags

from engine.cli import tool

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """The tool's flags, on `fv` (absl's global ones for the command)."""
  flags.DEFINE_string("data_dir", None, "MNIST IDX files (or any --data_dir "
                      "training takes).", required=True, flag_values=fv)
  flags.DEFINE_string("model", "iwae_mlp", "Model to measure.",
                      flag_values=fv)
  flags.DEFINE_integer("latent_dim", None, "Latent size (default: the "
                       "model's).", flag_values=fv)
  flags.DEFINE_integer("images", 300, "Test images per estimate.",
                       lower_bound=2, flag_values=fv)
  flags.DEFINE_integer("samples", 5000, "K, importance samples per image.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("batch_size", 100, "Test images per batch.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("rounds", 2, "Rounds; the median is reported.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("json_out", None, "Also write the results here.",
                      flag_values=fv)


def decoder_matmul_flops(vae) -> int:
  """FLOPs of one decoder pass of one latent row: 2 x the kernel sizes of
  its Dense layers; 0 (not counted) for a model with convolutions."""
  import keras

  if vae.has_convolutions:
    return 0
  return sum(2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
             for layer in vae.decoder._flatten_layers()
             if isinstance(layer, keras.layers.Dense))


def measure(data_dir: str, model: str, latent_dim, images: int, samples: int,
            batch_size: int, rounds: int) -> dict:
  """Seconds per estimate, compiled and not; the estimates; the FLOPs."""
  import keras
  import tensorflow as tf

  import models
  from engine import config as config_lib
  from engine.data import pipeline
  from engine.data import sources
  from engine.eval import evaluator as evaluator_lib
  from engine.eval import likelihood
  from engine.run import parts

  config = config_lib.from_settings(
      model=model, data_dir=data_dir, latent_dim=latent_dim,
      batch_size=batch_size, eval_nll_samples=samples)
  data = sources.load(config.data, config.train.seed)
  keras.utils.set_random_seed(0)
  vae = models.get(model).build(data.image_shape, config.model.latent_dim)
  objective = parts.objective(config.model).for_evaluation()
  strategy = tf.distribute.get_strategy()
  options = parts.pipeline_options(config, latent_dim=config.model.latent_dim,
                                   samples_per_example=1)
  test = parts.eval_data(
      strategy, pipeline.as_tensor(data.test_images[:images]),
      pipeline.as_tensor(data.test_labels[:images]), options)
  evaluators = {
      jit: likelihood.ImportanceSampledEvaluator(
          *evaluator_lib.model_functions(vae, objective), strategy,
          data.image_shape, config.model.latent_dim, samples, batch_size,
          config.train.seed,
          sampled=evaluator_lib.model_sampled_terms(vae, objective),
          jit_compile=jit)
      for jit in (False, True)}
  warm = parts.eval_data(
      strategy, pipeline.as_tensor(data.test_images[:batch_size]),
      pipeline.as_tensor(data.test_labels[:batch_size]), options)
  for evaluator in evaluators.values():
    evaluator.evaluate(warm)  # Traces and compiles.
  seconds = {False: [], True: []}
  estimates = {}
  for round_index in range(rounds):
    for jit in ((False, True) if round_index % 2 == 0 else (True, False)):
      started = time.perf_counter()
      estimates[jit] = evaluators[jit].evaluate(test)
      seconds[jit].append(time.perf_counter() - started)
  return {"seconds": {str(k).lower(): v for k, v in seconds.items()},
          "nll": {str(k).lower(): r.nll for k, r in estimates.items()},
          "nll_stderr": estimates[False].nll_stderr,
          "chunk": evaluators[True].chunk,
          "decoder_flops_per_row": decoder_matmul_flops(vae)}


def main(argv):
  del argv
  import os

  from engine.cli import roofline
  from engine.io import files
  from engine.run import preflight

  if FLAGS.json_out:  # Before the minutes of timing.
    preflight.writable_directory(
        "json_out", os.path.dirname(os.path.abspath(FLAGS.json_out)))

  result = measure(FLAGS.data_dir, FLAGS.model, FLAGS.latent_dim,
                   FLAGS.images, FLAGS.samples, FLAGS.batch_size, FLAGS.rounds)
  peak = roofline.matmul_peak_flops(dtype="float32")
  flops = result["decoder_flops_per_row"] * FLAGS.images * FLAGS.samples
  report = {"model": FLAGS.model, "images": FLAGS.images,
            "samples": FLAGS.samples, "batch_size": FLAGS.batch_size,
            "cpu": roofline.cpu_model(), "matmul_peak_flops": peak,
            "decoder_flops": flops, **result, "variants": {}}
  print(f"NLL of {FLAGS.images} test images, K={FLAGS.samples}, "
        f"{FLAGS.model}, batch {FLAGS.batch_size} (chunk "
        f"{result['chunk']} samples); CPU: {report['cpu']}; float32 matmul "
        f"peak {peak / 1e9:.0f} GFLOP/s")
  for jit in ("false", "true"):
    median = statistics.median(result["seconds"][jit])
    rate = flops / median
    report["variants"][jit] = {"seconds": median,
                               "images_per_sec": FLAGS.images / median,
                               "decoder_flops_per_sec": rate}
    print(f"  {'XLA   ' if jit == 'true' else 'no XLA'} {median:8.1f} s  "
          f"{FLAGS.images / median:8.2f} images/s"
          + (f"  {rate / 1e9:6.1f} GFLOP/s ({100 * rate / peak:.0f}% of the "
             "peak)" if flops else "")
          + f"  NLL {result['nll'][jit]:.3f}")
  ratio = (report["variants"]["false"]["seconds"]
           / report["variants"]["true"]["seconds"])
  report["xla_speedup"] = ratio
  print(f"XLA / no XLA: {ratio:.2f}x faster; the estimates differ by "
        f"{abs(result['nll']['true'] - result['nll']['false']):.4f} nats "
        f"(their standard error: {result['nll_stderr']:.2f})")
  if FLAGS.json_out:
    files.write_atomically(FLAGS.json_out, json.dumps(report, indent=2))


def cli() -> None:
  """The `vae-engine nll_rate` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
