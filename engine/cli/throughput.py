r"""Training throughput of the engine's loop at several --steps_per_loop.

    vae-engine throughput --data_dir=path/to/mnist \
        --models=dense,conv --steps_per_loop=1,100 --batch_size=128

Runs, in one process and in alternating rounds, the engine's compiled loop on
real data for each (model, steps_per_loop) and prints the median examples/sec
of several rounds, plus the ratio of each setting to steps_per_loop=1.
"""

from __future__ import annotations

import json
import statistics
import time

from absl import flags  # noqa: E402

from engine.cli import tool  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a script, so tests can import the module."""
  flags.DEFINE_string("data_dir", None, "Directory with the MNIST IDX files.")
  flags.DEFINE_string("dataset", "mnist", "Dataset name (see engine.main).")
  flags.DEFINE_list("models", ["dense", "conv"], "Models to measure.")
  flags.DEFINE_list("steps_per_loop", ["1", "100"], "Settings to compare.")
  flags.DEFINE_integer("batch_size", 128, "Global batch size.")
  flags.DEFINE_integer("steps", 400, "Steps timed per round.")
  flags.DEFINE_integer("rounds", 3, "Rounds; the median is reported.")
  flags.DEFINE_string("json_out", None, "Also write the results here as JSON.")


def examples_per_sec(trainer, iterator, steps: int, steps_per_loop: int,
                     batch_size: int) -> float:
  """Times `steps` training steps run `steps_per_loop` per compiled call."""
  import tensorflow as tf

  calls, remainder = divmod(steps, steps_per_loop)
  started = time.perf_counter()
  for _ in range(calls):
    trainer.train_loop(iterator, tf.constant(steps_per_loop, tf.int32))
  if remainder:
    trainer.train_loop(iterator, tf.constant(remainder, tf.int32))
  _ = trainer.step  # Waits for the device.
  return steps * batch_size / (time.perf_counter() - started)


def measure(model_name, data, batch_size, steps_per_loop_values, steps,
            rounds):
  """Returns {steps_per_loop: [examples/sec per round]} for one model."""
  import models
  from engine.run import parts
  from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
  from engine.data import pipeline

  spec = models.get(model_name)
  config = RunConfig(
      data=DataConfig(noise_factor=spec.default_noise_factor),
      model=ModelConfig(name=model_name, latent_dim=spec.default_latent_dim),
      train=TrainConfig(batch_size=batch_size))
  _, trainer = parts.model_and_trainer(config, data.image_shape,
                                       len(data.train_images))
  options = parts.pipeline_options(config)
  images = pipeline.as_tensor(data.train_images)
  total = (rounds + 1) * steps * len(steps_per_loop_values)
  feeds = {value: trainer.training_batches(images, options, value, 0, total)
           for value in steps_per_loop_values}

  def timed(steps_per_loop):
    return examples_per_sec(trainer, feeds[steps_per_loop], steps,
                            steps_per_loop, batch_size)

  results = {value: [] for value in steps_per_loop_values}
  for value in steps_per_loop_values:  # Warm-up: trace, fill the pipeline.
    timed(value)
  for _ in range(rounds):
    for value in steps_per_loop_values:
      results[value].append(timed(value))
  return results


def main(argv):
  del argv
  from engine.config import DataConfig
  from engine.data import sources

  data = sources.load(DataConfig(dataset=FLAGS.dataset,
                                 data_dir=FLAGS.data_dir))
  values = [int(v) for v in FLAGS.steps_per_loop]
  report = {}
  print(f"{'model':10s} {'steps_per_loop':>14s} {'examples/sec':>13s} "
        f"{'vs spl=' + str(values[0]):>10s}")
  for model_name in FLAGS.models:
    rates = measure(model_name, data, FLAGS.batch_size, values, FLAGS.steps,
                    FLAGS.rounds)
    medians = {v: statistics.median(r) for v, r in rates.items()}
    report[model_name] = {str(v): {"median": medians[v], "rounds": rates[v]}
                          for v in values}
    for v in values:
      print(f"{model_name:10s} {v:14d} {medians[v]:13,.0f} "
            f"{medians[v] / medians[values[0]]:9.2f}x", flush=True)
  if FLAGS.json_out:
    with open(FLAGS.json_out, "w") as f:
      json.dump({"batch_size": FLAGS.batch_size, "results": report}, f,
                indent=2)



def cli() -> None:
  """The `vae-engine throughput` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
