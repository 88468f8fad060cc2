"""Training speed of the engine against Keras `model.fit`, in one process.

    vae-engine benchmark --data_dir=path/to/mnist --models=dense,conv

For each model, on the same real data and batch size, in alternating rounds:

  (a) fit        the seeds' way: a Keras model whose train_step computes the
                 same loss and tracks the same means, trained by `model.fit`
                 on float32 numpy arrays (Keras's defaults: on a CPU,
                 `jit_compile="auto"` means no XLA);
  (a') tuned fit the strongest `fit` a user could write: the same model
                 compiled with `jit_compile=True, steps_per_execution=100`;
  (b) engine     our loop with steps_per_loop=1;
  (d) defaults   our loop with the engine's defaults (steps_per_loop=100,
                 `--jit_compile` auto);
  (c) best       our loop with steps_per_loop=100, with or without XLA,
                 whichever is faster (on one device the loop builds its own
                 batches; with XLA, 100 steps run as one XLA execution);
  synthetic      (c)'s loop fed one in-memory batch, to show the input
                 pipeline is not the bottleneck.

It also measures the machine's float32 matmul peak in the same run, counts
model FLOPs per training example (forward + backward, from the traced graph)
and reports achieved FLOP/s as a fraction of that peak. Prints a table of
medians and writes JSON.
"""

from __future__ import annotations

import json
import statistics

from engine.cli import tool  # First: TensorFlow's quiet import.
from engine.cli import roofline
from engine.cli import variants

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
                    "mixed_float16, or auto (this machine's choice; "
                    "timed once with the policy it picks, if also asked).")
  flags.DEFINE_string("json_out", "benchmark.json", "Where to write results.")
  flags.DEFINE_string("shards_dir", None,
                      "--data_dir converted by convert_dataset: also time "
                      "the engine's defaults reading every batch from it "
                      "(against the same defaults reading from memory).")
  flags.DEFINE_integer("large_batch_size", 1024,
                       "Also time the dense model's best loop at this batch "
                       "size against the matmul peak (0: skip).",
                       lower_bound=0)


def paired_median(numerators, denominators) -> float:
  """Median over rounds of one variant's rate over another's in that round
  (the rounds alternate, so a pair shares the machine's state)."""
  return statistics.median(a / b for a, b in zip(numerators, denominators))


_COLUMNS = (("model", 8, "<"), ("precision", 14, ">"), ("fit (a)", 8, ">"),
            ("tuned (a')", 10, ">"), ("spl1 (b)", 8, ">"),
            ("defaults", 8, ">"), ("best (c)", 8, ">"), ("c uses", 10, ">"),
            ("(d)/(a)", 7, ">"), ("(d)/(a')", 8, ">"), ("(d)/(c)", 7, ">"),
            ("real/syn", 8, ">"), ("% peak", 6, ">"))
HEADER = " ".join(f"{name:{align}{width}s}" for name, width, align in _COLUMNS)


def _report_row(name, policy, rates, flops, steps, peak) -> dict:
  """Prints one model's table row under `policy` and returns it as data."""
  medians = {k: statistics.median(v) for k, v in rates.items()}
  best_key = max(("best", "best_xla"), key=medians.get)
  best = medians[best_key]
  synthetic_key = best_key.replace("best", "synthetic")
  row = {
      "examples_per_sec": medians, "rounds": rates,
      "steps_per_round": steps,
      "best_variant": "steps_per_loop=100" + (
          ", XLA" if best_key == "best_xla" else ""),
      "ratio_best_over_fit": paired_median(rates[best_key], rates["fit"]),
      "ratio_defaults_over_fit": paired_median(rates["defaults"],
                                               rates["fit"]),
      "ratio_defaults_over_tuned_fit": paired_median(rates["defaults"],
                                                     rates["fit_tuned"]),
      "ratio_defaults_over_best": paired_median(rates["defaults"],
                                                rates[best_key]),
      "real_over_synthetic": paired_median(rates[best_key],
                                           rates[synthetic_key]),
      "flops_per_example": flops,
      "fraction_of_peak": best * flops / peak,
  }
  uses = "spl100" + ("+xla" if best_key == "best_xla" else "")
  print(f"{name:8s} {policy:>14s} {medians['fit']:8,.0f} "
        f"{medians['fit_tuned']:10,.0f} {medians['engine']:8,.0f} "
        f"{medians['defaults']:8,.0f} {best:8,.0f} {uses:>10s} "
        f"{row['ratio_defaults_over_fit']:7.2f} "
        f"{row['ratio_defaults_over_tuned_fit']:8.2f} "
        f"{row['ratio_defaults_over_best']:7.2f} "
        f"{row['real_over_synthetic']:8.2f} "
        f"{100 * row['fraction_of_peak']:5.1f}%  "
        f"({len(rates['fit'])} rounds of {steps} steps)", flush=True)
  if "shards" in rates:
    row["ratio_shards_over_memory"] = paired_median(rates["shards"],
                                                    rates["defaults"])
    print(f"{name}: defaults reading from shards "
          f"{medians['shards']:,.0f} ex/s, {row['ratio_shards_over_memory']:.2f}"
          "x the same from memory", flush=True)
  return row


def _policy(asked: str, name: str, data) -> str:
  """The policy `asked` runs `name` with: `auto` measured as a run would
  measure it (`engine.run.autotune`, nothing cached)."""
  import functools as tools

  import models
  from engine.data import pipeline
  from engine.devices import precision
  from engine.run import autotune

  if asked != "auto":
    return precision.resolve(asked, allow_slow=True).policy
  config = variants.run_config(name, FLAGS.batch_size, "auto", jit_compile=None)
  spec = models.get(name)
  create = tools.partial(spec.create, data.image_shape,
                         config.model.latent_dim)
  choice = autotune.choose(config, create,
                           pipeline.as_tensor(data.train_images),
                           pipeline.as_tensor(data.train_labels),
                           len(data.train_images),
                           __import__("tensorflow").distribute.get_strategy(),
                           is_chief=False, cache=False)
  print(f"{name}: auto precision: {choice.describe()}", flush=True)
  return choice.policy


def _quiet_cross_trainer_retracing() -> None:
  """Each variant is its own `Trainer`, whose loop traces once; TensorFlow's
  frequent-retracing detector counts the traces of every instance of
  `Trainer._train_loop` together and warns about them. Nothing retraces."""
  import logging

  class CrossInstance(logging.Filter):

    def filter(self, record):
      return "triggered tf.function retracing" not in record.getMessage()

  logging.getLogger("tensorflow").addFilter(CrossInstance())


def main(argv):
  del argv
  from engine.devices import precision
  from engine.config import DataConfig
  from engine.data import sources
  from engine.errors import UserError

  for name in FLAGS.precisions:
    if name not in (*precision.POLICIES, "auto"):
      raise UserError(f"--precisions: unknown policy {name!r} (choose from "
                      f"{', '.join(precision.POLICIES)}, auto)")

  _quiet_cross_trainer_retracing()
  data = sources.load(DataConfig(dataset=FLAGS.dataset,
                                 data_dir=FLAGS.data_dir))
  sharded = None
  if FLAGS.shards_dir:
    sharded = sources.load(DataConfig(data_dir=FLAGS.shards_dir)).train_images
    if sharded.shape != data.train_images.shape:
      raise UserError(f"--shards_dir={FLAGS.shards_dir}: holds "
                      f"{sharded.shape} training images, --data_dir "
                      f"{data.train_images.shape}; convert --data_dir")
  peak = roofline.matmul_peak_flops()
  report = {"batch_size": FLAGS.batch_size, "steps": FLAGS.steps,
            "min_rounds": FLAGS.rounds, "min_seconds": FLAGS.min_seconds,
            "matmul_peak_flops": peak, "models": {}}
  print(f"float32 matmul peak: {peak / 1e9:.1f} GFLOP/s; batch "
        f"{FLAGS.batch_size}; medians of at least {FLAGS.rounds} rounds "
        f"and {FLAGS.min_seconds:.0f} s per model; ratios are medians of "
        f"the rounds' ratios\n")
  print(f"CPU: {roofline.cpu_model()}; columns: fit (a) Keras defaults, "
        "tuned (a') jit_compile=True + steps_per_execution=100, the engine at "
        "steps_per_loop 1 (b), with its defaults (d), and its best variant "
        "(c); ratios are (d)/(a), (d)/(a'), (d)/(c)")
  print(HEADER)
  # `auto` runs what it picks: a policy also asked is not timed twice.
  measured = {}
  for name in FLAGS.models:
    for asked in FLAGS.precisions:
      policy = _policy(asked, name, data)
      if (name, policy) not in measured:
        measured[name, policy] = variants.measure_model(
            name, data, FLAGS.batch_size, FLAGS.steps, FLAGS.rounds,
            policy, FLAGS.min_seconds, FLAGS.round_seconds, sharded)
      report["models"].setdefault(name, {})[asked] = _report_row(
          name, policy if asked != "auto" else f"auto={policy}",
          *measured[name, policy], peak)
  if FLAGS.large_batch_size and "dense" in FLAGS.models:
    rates, flops = variants.measure_large_batch("dense", data, FLAGS.large_batch_size,
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
