"""One short check of the engine on a GPU: speed against Keras, and correctness.

    vae-engine device_check --output=device_check.json      # a GPU machine
    vae-engine device_check --cpu_mode --output=cpu.json    # what CI runs

Speed: `dense` and `conv` at batch 128 and 1024, our loop under float32,
mixed_float16 and mixed_bfloat16, XLA off and on, steps_per_loop 1 and 100,
against Keras `model.fit` (float32, XLA as Keras chooses) on the same model
and data; achieved FLOP/s as a fraction of a matmul peak measured in the same
run in the policy's compute dtype.

Correctness, each in a fresh process (devices are laid out before TensorFlow
starts): `mirrored` over two logical devices carved from the one device (two
logical GPUs; two logical CPUs in CPU mode) against one device, to the
suite's tolerances (SGD weights 1e-5, test ELBO 1e-3 nats, TF32 off); and
exact resume on the device (2N steps straight against N steps, then a
resumed run to 2N: the same weights, bit for bit, with op determinism on).

`--cpu_mode` (also the default where there is no GPU) is the same code with
small sizes, `dense` alone, float32 and bfloat16, and four of the eight
(policy, XLA, steps_per_loop) settings (every pair of two settings' values
once), so that the test suite runs it and it cannot rot. Without
`--data_dir` it trains on synthetic images. Prints a table and writes one
JSON file.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from engine.cli import tool  # First: TensorFlow's quiet import.
from engine.cli import variants
from engine.cli import fit_baseline
from engine.cli import launch_local
from engine.cli import roofline
from engine.cli import throughput

from absl import flags

FLAGS = flags.FLAGS
_PEAK_DTYPES = {"float32": "float32", "mixed_float16": "float16",
                "mixed_bfloat16": "bfloat16"}


def define_flags():
  """Defined only when run as a script, so tests can import the module."""
  flags.DEFINE_string("output", "device_check.json", "Where to write JSON.")
  flags.DEFINE_string("data_dir", None, "MNIST IDX files (default: "
                      "synthetic images, written to a temporary directory).")
  flags.DEFINE_bool("cpu_mode", None, "Small sizes, the dense model alone, "
                    "float32 and bfloat16 (default: on where there is no "
                    "GPU).")
  flags.DEFINE_enum("part", "all", ["all", "speed", "correctness"],
                    "What to run (correctness runs in a child process).")
  flags.DEFINE_string("correctness_dir", None, "Scratch directory of the "
                      "correctness child.")


def sizes(cpu_mode: bool) -> dict:
  """What one mode measures."""
  if cpu_mode:
    # CI's dry run of every code path. The settings are an orthogonal array:
    # their product would compile the same paths twice.
    return {"models": ["dense"], "batch_sizes": [32],
            "policies": ["float32", "mixed_bfloat16"],
            "settings": [("float32", False, 1), ("float32", True, 4),
                         ("mixed_bfloat16", False, 4),
                         ("mixed_bfloat16", True, 1)],
            "steps": 8, "peak_size": 512}
  policies = ["float32", "mixed_float16", "mixed_bfloat16"]
  return {"models": ["dense", "conv"], "batch_sizes": [128, 1024],
          "policies": policies, "settings": list(itertools.product(
              policies, (False, True), (1, 100))),
          "steps": 200, "peak_size": 8192}


def synthetic_data_dir(directory: str, train: int = 4096,
                       test: int = 520) -> str:
  """Random 28x28 grey images and labels as IDX files (test: 520, so the
  last global batch of 64 leaves a replica empty)."""
  import numpy as np

  rng = np.random.default_rng(0)
  for prefix, count in (("train", train), ("t10k", test)):
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
      header = struct.pack(f">I{array.ndim}I", 0x800 | array.ndim,
                           *array.shape)
      with gzip.open(os.path.join(directory, f"{prefix}-{kind}-ubyte.gz"),
                     "wb") as f:
        f.write(header + array.tobytes())
  return directory


def measure_speed(data, cpu_mode: bool) -> dict:
  """Examples/sec of each model, batch and (policy, XLA, steps_per_loop)
  setting and of `fit`, with FLOPs per example and each policy's peak."""
  import keras

  import models
  from engine.run import parts
  from engine.data import pipeline

  plan = sizes(cpu_mode)
  peaks = {policy: roofline.matmul_peak_flops(
      plan["peak_size"], repeats=10, dtype=_PEAK_DTYPES[policy])
           for policy in plan["policies"]}
  images = pipeline.as_tensor(data.train_images)
  rows = []
  for name in plan["models"]:
    spec = models.get(name)
    for batch_size in plan["batch_sizes"]:
      steps = plan["steps"]
      base = variants.run_config(name, batch_size, "float32")
      model_config = base.model
      options = parts.pipeline_options(base)
      fit = fit_baseline.fit_runner(spec, data, model_config, batch_size,
                                 steps + 1)
      fit(2)  # Traces.
      fit_rate = fit(steps + 1)
      one_batch = next(iter(pipeline.train_dataset(images, options, 0, 1)))
      flops = None
      for policy, jit_compile, steps_per_loop in plan["settings"]:
        keras.utils.set_random_seed(0)
        _, trainer = parts.model_and_trainer(
            variants.run_config(name, batch_size, policy, jit_compile),
            data.image_shape, len(data.train_images))
        if flops is None:
          flops = roofline.flops_per_example(trainer, one_batch, batch_size)
        batches = trainer.training_batches(images, options, steps_per_loop,
                                           0, 1 << 40)
        throughput.examples_per_sec(trainer, batches, steps_per_loop,
                                    steps_per_loop, batch_size)
        rate = statistics.median(
            throughput.examples_per_sec(trainer, batches, steps,
                                        steps_per_loop, batch_size)
            for _ in range(3))
        rows.append({
            "model": name, "batch_size": batch_size, "policy": policy,
            "xla": jit_compile, "steps_per_loop": steps_per_loop,
            "examples_per_sec": rate, "fit_examples_per_sec": fit_rate,
            "ratio_over_fit": rate / fit_rate, "flops_per_example": flops,
            "fraction_of_peak": rate * flops / peaks[policy]})
        print(f"{name:6s} {batch_size:5d} {policy:>14s} "
              f"{'xla' if jit_compile else '   '} "
              f"spl{steps_per_loop:<4d} {rate:12,.0f} ex/s  fit "
              f"{fit_rate:10,.0f}  {rate / fit_rate:5.2f}x  "
              f"{100 * rate * flops / peaks[policy]:5.1f}% of the "
              f"{_PEAK_DTYPES[policy]} peak", flush=True)
  return {"peaks_flops": peaks, "rows": rows}


def check_correctness(data_dir: str, model_dir: str, cpu_mode: bool) -> dict:
  """Mirrored over two logical devices vs one, and exact resume (this
  process must not have started TensorFlow's runtime yet)."""
  import numpy as np
  import tensorflow as tf

  from engine.io import run_dir
  from engine.run import runner
  from engine.config import (DataConfig, DistributionConfig, ModelConfig,
                             RunConfig, TrainConfig)

  gpus = tf.config.list_physical_devices("GPU")
  if gpus and not cpu_mode:
    tf.config.set_logical_device_configuration(
        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=4096)] * 2)
    devices = "2 logical GPUs on one"
  else:
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    devices = "2 logical CPUs"
  tf.config.experimental.enable_tensor_float_32_execution(False)

  def config(name, strategy, steps, directory, optimizer="sgd"):
    return RunConfig(
        data=DataConfig(data_dir=data_dir, binarize="dynamic"),
        model=ModelConfig(name=name, latent_dim=2),
        train=TrainConfig(model_dir=directory, batch_size=64,
                          train_steps=steps, steps_per_loop=4, log_every=4,
                          checkpoint_every=steps // 2 or 1, figures=False,
                          optimizer=optimizer,
                          learning_rate=1e-4 if optimizer == "sgd" else 1e-3),
        distribution=DistributionConfig(strategy=strategy))

  quiet = open(os.devnull, "w")
  report = {"devices": devices, "mirrored": {}, "resume": {}}
  for name in sizes(cpu_mode)["models"]:
    results, weights = {}, {}
    for strategy in ("mirrored", "default"):
      directory = os.path.join(model_dir, f"{name}_{strategy}")
      results[strategy] = runner.run(config(name, strategy, 8, directory),
                                     quiet)
      weights[strategy] = [v.numpy() for v in run_dir.load_trained_model(
          directory).vae.trainable_variables]
    worst = max(float(np.max(np.abs(a - b)))
                for a, b in zip(weights["mirrored"], weights["default"]))
    elbo_gap = abs(results["mirrored"].test_metrics["elbo"]
                   - results["default"].test_metrics["elbo"])
    report["mirrored"][name] = {
        "max_abs_weight_diff": worst, "elbo_diff": elbo_gap,
        "ok": worst < 1e-5 and elbo_gap < 1e-3}
  tf.config.experimental.enable_op_determinism()
  for name in sizes(cpu_mode)["models"]:
    straight = runner.run(config(name, "default", 16, os.path.join(
        model_dir, f"{name}_straight"), "adam"), quiet)
    split_dir = os.path.join(model_dir, f"{name}_split")
    runner.run(config(name, "default", 8, split_dir, "adam"), quiet)
    resumed = runner.run(config(name, "default", 16, split_dir, "adam"),
                         quiet)
    report["resume"][name] = {
        "straight": straight.weights_fingerprint, "resumed_from":
        resumed.resumed_from, "resumed": resumed.weights_fingerprint,
        "ok": (straight.weights_fingerprint == resumed.weights_fingerprint
               and bool(resumed.resumed_from))}
  return report


def _correctness_in_child(data_dir: str, cpu_mode: bool) -> dict:
  with tempfile.TemporaryDirectory() as model_dir, \
      tempfile.NamedTemporaryFile(suffix=".json") as output:
    command = [sys.executable, "-m", "engine.cli.device_check",
               "--part=correctness", f"--data_dir={data_dir}",
               f"--output={output.name}",
               f"--cpu_mode={cpu_mode}", f"--correctness_dir={model_dir}"]
    # The child imports this module's engine, not an editable install's.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [launch_local.PACKAGE_ROOT]
        + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    result = subprocess.run(command, capture_output=True, text=True,
                            check=False, env=env)
    if result.returncode:
      return {"ok": False, "error": result.stderr[-2000:]}
    return json.load(open(output.name))


def main(argv):
  del argv
  import tensorflow as tf

  from engine.config import DataConfig
  from engine.data import sources

  started = time.perf_counter()
  cpu_mode = (FLAGS.cpu_mode if FLAGS.cpu_mode is not None
              else not tf.config.list_physical_devices("GPU"))
  with tempfile.TemporaryDirectory() as scratch:
    data_dir = FLAGS.data_dir or synthetic_data_dir(scratch)
    if FLAGS.part == "correctness":
      report = check_correctness(data_dir, FLAGS.correctness_dir, cpu_mode)
    else:
      report = {"device": tf.config.list_physical_devices("GPU") and str(
          tf.config.experimental.get_device_details(
              tf.config.list_physical_devices("GPU")[0])) or "CPU",
                "cpu_mode": cpu_mode}
      if FLAGS.part in ("all", "speed"):
        data = sources.load(DataConfig(data_dir=data_dir))
        report["speed"] = measure_speed(data, cpu_mode)
      if FLAGS.part == "all":
        report["correctness"] = _correctness_in_child(data_dir, cpu_mode)
        for kind in ("mirrored", "resume"):
          for name, row in report["correctness"].get(kind, {}).items():
            print(f"{kind:9s} {name:6s} {'ok' if row['ok'] else 'FAILED'} "
                  f"{json.dumps(row)}", flush=True)
  report["seconds"] = round(time.perf_counter() - started, 1)
  with open(FLAGS.output + ".tmp", "w") as f:
    json.dump(report, f, indent=2)
  os.replace(FLAGS.output + ".tmp", FLAGS.output)
  print(f"wrote {FLAGS.output} ({report['seconds']} s)")
  if FLAGS.part == "all" and not correctness_ok(report["correctness"]):
    print("device check: a correctness check FAILED", file=sys.stderr)
    sys.exit(1)


def correctness_ok(report: dict) -> bool:
  """Every mirrored and resume check passed."""
  rows = [row for kind in ("mirrored", "resume")
          for row in report.get(kind, {}).values()]
  return bool(rows) and all(row["ok"] for row in rows)


def cli() -> None:
  """The `vae-engine device_check` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
