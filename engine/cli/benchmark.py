"""Training speed of the engine against Keras `model.fit`, in one process.

    python tools/benchmark.py --data_dir=../shared/data/mnist --models=dense,conv

For each model, on the same real data and batch size, in alternating rounds:

  (a) fit        the seeds' way: a Keras model whose train_step computes the
                 same loss and tracks the same means, trained by `model.fit`
                 on float32 numpy arrays;
  (b) engine     our loop with steps_per_loop=1;
  (c) best       our loop with steps_per_loop=100, and with XLA if faster
                 (on one device the loop builds its own batches; with XLA,
                 100 steps run as one XLA execution);
  synthetic      (c)'s loop fed one in-memory batch, to show the input
                 pipeline is not the bottleneck.

It also measures the machine's float32 matmul peak in the same run, counts
model FLOPs per training example (forward + backward, from the traced graph)
and reports achieved FLOP/s as a fraction of that peak. Prints a table of
medians and writes JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time

from engine.cli import tool  # First: TensorFlow's quiet import.
from engine.cli import fit_baseline
from engine.cli import roofline
from engine.cli import throughput

from absl import flags

FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a script, so tests can import the module."""
  flags.DEFINE_string("data_dir", None, "Directory with the MNIST IDX files.")
  flags.DEFINE_string("dataset", "mnist", "Dataset name (see engine.main).")
  flags.DEFINE_list("models", ["dense", "conv"], "Models to measure.")
  flags.DEFINE_integer("batch_size", 128, "Batch size.", lower_bound=1)
  flags.DEFINE_integer("steps", 200, "Steps timed per variant and round, at "
                       "most (see --round_seconds).", lower_bound=10)
  flags.DEFINE_float("round_seconds", 4.0,
                     "Fewer steps per round where the slowest variant would "
                     "take longer than this (0: always --steps).",
                     lower_bound=0.0)
  flags.DEFINE_integer("rounds", 3, "Rounds at least; medians are reported.",
                       lower_bound=1)
  flags.DEFINE_float("min_seconds", 90.0,
                     "Per model, keep adding rounds until this long has "
                     "passed (more rounds: medians that resist this "
                     "machine's noise).", lower_bound=0.0)
  flags.DEFINE_list("precisions", ["float32"],
                    "Policies for the engine's runs, each measured against "
                    "the same float32 fit: float32, mixed_bfloat16, "
                    "mixed_float16, or auto (this machine's choice).")
  flags.DEFINE_string("json_out", "benchmark.json", "Where to write results.")
  flags.DEFINE_integer("large_batch_size", 1024,
                       "Also time the dense model's best loop at this batch "
                       "size against the matmul peak (0: skip).",
                       lower_bound=0)


def run_config(name: str, batch_size: int, policy: str,
               jit_compile: bool = False):
  """The engine config a benchmark trains `name` with: the model's defaults,
  Adam at 1e-3, no binarization or noise (what `fit` sees too)."""
  import models
  from engine.config import ModelConfig, RunConfig, TrainConfig

  return RunConfig(
      model=ModelConfig(name=name,
                        latent_dim=models.get(name).default_latent_dim),
      train=TrainConfig(batch_size=batch_size, mixed_precision=policy,
                        jit_compile=jit_compile, allow_slow=True))


def _one_batch_source(images, options, steps_per_call, batch):
  """A `StepBatches` whose every step trains on `batch` (no data work)."""
  import tensorflow as tf

  from engine.data import step_batches

  class OneBatch(step_batches.StepBatches):

    def draw(self, first_step):
      del first_step
      return {"unused": tf.zeros([self.steps_per_call])}

    def batch(self, draws):
      del draws
      return batch

  return OneBatch(images, options, steps_per_call)


def measure_model(name, data, batch_size, steps, rounds, policy,
                  min_seconds=0.0, round_seconds=0.0):
  """Returns (examples/sec of every variant in every round, FLOPs per
  example, steps per round).

  Variants: `fit` (a); `engine` (b); `best` and `best_xla` (c without and
  with XLA, steps_per_loop 100); `synthetic` and `synthetic_xla`, the same
  loops fed one in-memory batch. Each engine variant is fed as the runner
  would feed it (see `Trainer.loops_on_device`).
  """
  import keras
  import tensorflow as tf

  import models
  from engine.run import parts
  from engine.data import pipeline

  spec = models.get(name)
  config = run_config(name, batch_size, policy)
  model_config = config.model
  images = pipeline.as_tensor(data.train_images)
  options = parts.pipeline_options(config)
  steps_per_loop = min(steps, 100)

  def engine(jit_compile):
    keras.utils.set_random_seed(0)
    return parts.model_and_trainer(
        dataclasses.replace(config, train=dataclasses.replace(
            config.train, jit_compile=jit_compile)),
        data.image_shape, len(data.train_images))[1]

  one_batch = next(iter(pipeline.train_dataset(images, options, 0, 1)))
  trainers = {"engine": engine(False), "best": engine(False),
              "best_xla": engine(True), "synthetic": engine(False),
              "synthetic_xla": engine(True)}

  def feed(key):
    """What the runner would feed this trainer: its own batches where the
    loop builds them, else tf.data; one in-memory batch if synthetic."""
    trainer = trainers[key]
    calls = 1 if key == "engine" else steps_per_loop
    if key.startswith("synthetic"):
      if trainer.loops_on_device:
        return _one_batch_source(images, options, calls, one_batch)
      return iter(tf.data.Dataset.from_tensors(one_batch).repeat())
    return trainer.training_batches(images, options, calls, 0, 1 << 40)

  feeds = {key: feed(key) for key in trainers}

  run_fit = fit_baseline.fit_runner(spec, data, model_config, batch_size,
                                    steps)

  def run_engine(key, count):
    return throughput.examples_per_sec(
        trainers[key], feeds[key], count,
        1 if key == "engine" else steps_per_loop, batch_size)

  variants = ["fit"] + list(trainers)
  run = {key: (run_fit if key == "fit" else
               functools.partial(run_engine, key)) for key in variants}
  # Warm-up: traces and compiles everything, fills pipelines. Then a short
  # round sizes the timed ones.
  for key in variants:
    run[key](max(10, steps // 4))
  slowest = min(run[key](10) for key in variants)
  if round_seconds:
    steps = int(min(steps, max(10, round_seconds * slowest / batch_size)))
  results = {key: [] for key in variants}
  started = time.perf_counter()
  while (len(results["fit"]) < rounds
         or time.perf_counter() - started < min_seconds):
    for key in variants:
      results[key].append(run[key](steps))
  flops = roofline.flops_per_example(trainers["engine"], one_batch, batch_size)
  return results, flops, steps


def paired_median(numerators, denominators) -> float:
  """Median over rounds of one variant's rate over another's in that round
  (the rounds alternate, so a pair shares the machine's state)."""
  return statistics.median(a / b for a, b in zip(numerators, denominators))


def measure_large_batch(name, data, batch_size, steps, rounds):
  """(examples/sec per round, FLOPs per example) of the engine's best loop
  (steps_per_loop 100, XLA) at a large batch size."""
  import keras

  from engine.run import parts
  from engine.data import pipeline

  config = run_config(name, batch_size, "float32", jit_compile=True)
  images = pipeline.as_tensor(data.train_images)
  options = parts.pipeline_options(config)
  keras.utils.set_random_seed(0)
  _, trainer = parts.model_and_trainer(config, data.image_shape,
                                       len(data.train_images))
  steps_per_loop = min(steps, 100)
  batches = trainer.training_batches(images, options, steps_per_loop, 0,
                                     steps * (rounds + 1))
  rates = [throughput.examples_per_sec(trainer, batches, steps,
                                       steps_per_loop, batch_size)
           for _ in range(rounds + 1)][1:]  # The first round traces.
  one_batch = next(iter(pipeline.train_dataset(images, options, 0, 1)))
  return rates, roofline.flops_per_example(trainer, one_batch, batch_size)


def _report_row(name, policy, rates, flops, steps, peak) -> dict:
  """Prints one model's table row under `policy` and returns it as data."""
  medians = {k: statistics.median(v) for k, v in rates.items()}
  best_key = max(("best", "best_xla"), key=medians.get)
  best = medians[best_key]
  synthetic_key = best_key.replace("best", "synthetic")
  synthetic = medians[synthetic_key]
  row = {
      "examples_per_sec": medians, "rounds": rates,
      "steps_per_round": steps,
      "best_variant": "steps_per_loop=100" + (
          ", XLA" if best_key == "best_xla" else ""),
      "ratio_best_over_fit": paired_median(rates[best_key], rates["fit"]),
      "real_over_synthetic": paired_median(rates[best_key],
                                           rates[synthetic_key]),
      "flops_per_example": flops,
      "fraction_of_peak": best * flops / peak,
  }
  uses = "spl100" + ("+xla" if best_key == "best_xla" else "")
  print(f"{name:10s} {policy:>14s} {medians['fit']:9,.0f} "
        f"{medians['engine']:10,.0f} {best:9,.0f} {uses:>8s} "
        f"{synthetic:9,.0f} {row['ratio_best_over_fit']:8.2f} "
        f"{row['real_over_synthetic']:8.2f} {flops / 1e9:8.4f} "
        f"{100 * row['fraction_of_peak']:6.1f}%  "
        f"({len(rates['fit'])} rounds of {steps} steps)", flush=True)
  return row


def main(argv):
  del argv
  from engine.devices import precision
  from engine.config import DataConfig
  from engine.data import sources
  from engine.errors import UserError

  policies = []
  for name in FLAGS.precisions:
    if name not in (*precision.POLICIES, "auto"):
      raise UserError(f"--precisions: unknown policy {name!r} (choose from "
                      f"{', '.join(precision.POLICIES)}, auto)")
    choice = precision.resolve(name, allow_slow=True)
    print(f"precision {name}: {choice.describe()}")
    policies.append(choice.policy)

  data = sources.load(DataConfig(dataset=FLAGS.dataset,
                                 data_dir=FLAGS.data_dir))
  peak = roofline.matmul_peak_flops()
  report = {"batch_size": FLAGS.batch_size, "steps": FLAGS.steps,
            "min_rounds": FLAGS.rounds, "min_seconds": FLAGS.min_seconds,
            "matmul_peak_flops": peak, "models": {}}
  print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s; batch "
        f"{FLAGS.batch_size}; medians of at least {FLAGS.rounds} rounds "
        f"and {FLAGS.min_seconds:.0f} s per model; ratios are medians of "
        f"the rounds' ratios\n")
  header = (f"{'model':10s} {'precision':>14s} {'fit (a)':>9s} {'engine (b)':>10s} "
            f"{'best (c)':>9s} {'c uses':>8s} {'synthetic':>9s} "
            f"{'(c)/(a)':>8s} {'real/syn':>8s} {'GFLOP/ex':>8s} "
            f"{'% peak':>7s}")
  print(header)
  for name in FLAGS.models:
    for policy in policies:
      report["models"].setdefault(name, {})[policy] = _report_row(
          name, policy, *measure_model(
              name, data, FLAGS.batch_size, FLAGS.steps, FLAGS.rounds,
              policy, FLAGS.min_seconds, FLAGS.round_seconds), peak)
  if FLAGS.large_batch_size and "dense" in FLAGS.models:
    rates, flops = measure_large_batch("dense", data, FLAGS.large_batch_size,
                                       max(FLAGS.steps // 4, 10),
                                       FLAGS.rounds)
    rate = statistics.median(rates)
    report["dense_large_batch"] = {
        "batch_size": FLAGS.large_batch_size, "examples_per_sec": rate,
        "rounds": rates, "flops_per_example": flops,
        "fraction_of_peak": rate * flops / peak}
    print(f"\ndense at batch {FLAGS.large_batch_size} (spl100+xla): "
          f"{rate:,.0f} ex/s = {rate * flops / 1e9:.1f} GFLOP/s, "
          f"{100 * rate * flops / peak:.1f}% of the matmul peak", flush=True)
  with open(FLAGS.json_out, "w") as f:
    json.dump(report, f, indent=2)
  print(f"\nwrote {FLAGS.json_out}")



def cli() -> None:
  """The `vae-engine benchmark` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
