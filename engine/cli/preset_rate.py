r"""A preset's marginal training rate, beside the machine's arithmetic limit.

    vae-engine preset_rate --preset=iwae_vae --data_dir=path/to/mnist
    vae-engine preset_rate --preset=iwae_vae --data_dir=path/to/mnist \
        --variants=engine,one_thread,two_runs --rounds=3

Runs `vae-engine --preset=<preset>` as a user would, each run its own
process, for --long_steps and for --short_steps, and divides the steps in
between by the seconds in between: start-up, compilation and the final
evaluation cancel out, what is left is the rate of the protocol's steps
(the "marginal rate"). Variants, alternated round by round so a busy
machine slows all of them alike:

  engine      the engine as it ships, alone on the machine;
  one_thread  one intra-op thread (`TF_NUM_INTRAOP_THREADS=1`), alone;
  two_runs    two one-thread runs at once, each pinned to its own core (as
              two rows of a table would train side by side): their steps
              per second added up;
  compiled_loop  XLA:CPU's older runtime (`XLA_FLAGS=
              --xla_cpu_use_thunk_runtime=false`), which compiles the loop's
              control flow into the program instead of running each op of
              a step as its own call from a runtime: the same weights,
              measured here beside the default.

Prints the median steps/s of each variant and its ratio to the first, the
CPU, and the arithmetic limit: the preset's forward and backward FLOPs per
step (counted from the traced gradient graph) at the float32 matmul peak
this process measures. Writes the results as JSON.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from engine.cli import tool  # First: TensorFlow's quiet import.
from engine.cli import roofline

from absl import flags

FLAGS = flags.FLAGS

# name -> (environment, concurrent runs).
VARIANTS = {
    "engine": ({}, 1),
    "one_thread": ({"TF_NUM_INTRAOP_THREADS": "1"}, 1),
    "two_runs": ({"TF_NUM_INTRAOP_THREADS": "1"}, 2),
    "compiled_loop": ({"XLA_FLAGS": "--xla_cpu_use_thunk_runtime=false"}, 1),
}


def define_flags():
  """Defined only when run as a tool, so tests can import the module."""
  flags.DEFINE_string("preset", "iwae_vae", "The preset to time.")
  flags.DEFINE_string("data_dir", None, "The preset's --data_dir.")
  flags.DEFINE_list("variants", ["engine", "one_thread", "two_runs"],
                    f"What to compare: {', '.join(VARIANTS)}.")
  flags.DEFINE_integer("long_steps", 15000, "Steps of the long run.",
                       lower_bound=2)
  flags.DEFINE_integer("short_steps", 3000, "Steps of the short run.",
                       lower_bound=1)
  flags.DEFINE_integer("rounds", 3, "Rounds; medians are reported.",
                       lower_bound=1)
  flags.DEFINE_string("extra_flags", "",
                      "Further flags for every run, as on a command line "
                      "(e.g. '--batch_size=100 --jit_compile=false').")
  flags.DEFINE_string("json_out", "preset_rate.json", "Where to write them.")


def _run_seconds(preset_flags: list[str], steps: int, env: dict,
                 model_dirs: list[str]) -> float:
  """Wall time of one run per model dir, all at once (each pinned to its
  own core when there are several)."""
  cores = sorted(os.sched_getaffinity(0))
  processes = []
  started = time.perf_counter()
  for index, model_dir in enumerate(model_dirs):
    command = [sys.executable, "-m", "engine.main", *preset_flags,
               f"--train_steps={steps}", f"--model_dir={model_dir}",
               "--eval_every=0", "--checkpoint_every=0", "--nofigures",
               "--export_dir="]
    core = {cores[index % len(cores)]} if len(model_dirs) > 1 else None
    processes.append(subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=_environment(env),
        preexec_fn=(lambda core=core: os.sched_setaffinity(0, core))
        if core else None))
  failures = []
  for process in processes:
    _, stderr = process.communicate()
    if process.returncode:
      failures.append(stderr.strip().splitlines()[-1:])
  seconds = time.perf_counter() - started
  if failures:
    from engine.errors import UserError
    raise UserError(f"--preset={FLAGS.preset}: a timed run failed "
                    f"({' '.join(failures[0])}); run it alone to see why")
  return seconds


def _environment(variant_env: dict) -> dict:
  """This process's environment with the variant's (XLA_FLAGS added to the
  user's own, not in place of them)."""
  env = {**os.environ, **variant_env}
  if "XLA_FLAGS" in variant_env and os.environ.get("XLA_FLAGS"):
    env["XLA_FLAGS"] = f"{os.environ['XLA_FLAGS']} {variant_env['XLA_FLAGS']}"
  return env


def marginal_rate(preset_flags, long_steps, short_steps, env,
                  runs: int = 1) -> float:
  """(long - short) steps x runs / (the wall-time difference); NaN where
  the long runs were not the slower (raise --long_steps)."""
  with tempfile.TemporaryDirectory(prefix="preset_rate_") as root:
    long_s = _run_seconds(preset_flags, long_steps, env,
                          [f"{root}/long{i}" for i in range(runs)])
    short_s = _run_seconds(preset_flags, short_steps, env,
                           [f"{root}/short{i}" for i in range(runs)])
  if long_s <= short_s:  # Noise larger than the steps in between.
    return float("nan")
  return runs * (long_steps - short_steps) / (long_s - short_s)


def flops_per_step(preset_flags: list[str]) -> float:
  """Forward + backward FLOPs of one of the preset's steps."""
  from flags import definitions
  from engine.data import pipeline, sources
  from engine.run import parts

  config = definitions.config_from_argv(
      [*preset_flags, "--model_dir=/nonexistent/preset_rate"])
  data = sources.load(config.data)
  _, trainer = parts.model_and_trainer(config, data.image_shape,
                                       len(data.train_images))
  options = parts.pipeline_options(config)
  batch = next(iter(pipeline.train_dataset(
      pipeline.as_tensor(data.train_images), options, 0, 1)))
  size = config.train.batch_size
  return roofline.flops_per_example(trainer, batch, size) * size


def main(argv):
  del argv
  from engine.errors import UserError

  unknown = [name for name in FLAGS.variants if name not in VARIANTS]
  if unknown:
    raise UserError(f"--variants: unknown {', '.join(unknown)} (choose from "
                    f"{', '.join(VARIANTS)})")
  if FLAGS.short_steps >= FLAGS.long_steps:
    raise UserError("--short_steps: must be below --long_steps; lower it")
  preset_flags = [f"--preset={FLAGS.preset}",
                  *shlex.split(FLAGS.extra_flags)]
  if FLAGS.data_dir:
    preset_flags.append(f"--data_dir={FLAGS.data_dir}")
  flops = flops_per_step(preset_flags)
  peak = roofline.matmul_peak_flops()
  rates = {name: [] for name in FLAGS.variants}
  for _ in range(FLAGS.rounds):
    for name in FLAGS.variants:
      rates[name].append(marginal_rate(preset_flags, FLAGS.long_steps,
                                       FLAGS.short_steps, *VARIANTS[name]))
  limit = peak / flops
  print(f"CPU: {roofline.cpu_model()}, {os.cpu_count()} cores; --preset="
        f"{FLAGS.preset}: {flops / 1e6:.1f} MFLOP per step; float32 matmul "
        f"peak {peak / 1e9:.1f} GFLOP/s, so at most {limit:,.0f} steps/s")
  print(f"marginal steps/s ({FLAGS.long_steps:,} - {FLAGS.short_steps:,} "
        f"steps), median of {FLAGS.rounds} round(s):")
  first = statistics.median(rates[FLAGS.variants[0]])
  report = {"cpu": roofline.cpu_model(), "preset": FLAGS.preset,
            "flops_per_step": flops, "matmul_peak_flops": peak,
            "steps_per_sec_limit": limit, "variants": {}}
  for name in FLAGS.variants:
    median = statistics.median(rates[name])
    report["variants"][name] = {"steps_per_sec": median,
                                "rounds": rates[name]}
    print(f"  {name:<11} {median:>8,.0f} steps/s  {median / first:5.2f}x  "
          f"{100 * median / limit:4.1f}% of the limit  (rounds: "
          f"{', '.join(f'{r:,.0f}' for r in rates[name])})")
  with open(FLAGS.json_out, "w") as f:
    json.dump(report, f, indent=2)
  print(f"wrote {FLAGS.json_out}")


def cli() -> None:
  """The `vae-engine preset_rate` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
