"""The variants the benchmark times, each fed as a run would feed it: Keras
`fit` (defaults, and tuned), and the engine's loop at steps_per_loop 1, with
its defaults, and its best settings, on real and on synthetic input."""

from __future__ import annotations

import dataclasses
import functools
import time

from engine.cli import fit_baseline
from engine.cli import roofline
from engine.cli import throughput


def run_config(name: str, batch_size: int, policy: str,
               jit_compile=False):
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
                  min_seconds=0.0, round_seconds=0.0, sharded=None):
  """Returns (examples/sec of every variant in every round, FLOPs per
  example, steps per round).

  Variants: `fit` (a), `fit_tuned` (a'), `engine` (b), `defaults` (d),
  `best` and `best_xla` (c without and with XLA, steps_per_loop 100),
  `synthetic` and `synthetic_xla`, the same loops fed one in-memory batch;
  with `sharded` (the training set converted, a `shards.ShardedSplit`),
  `shards`: the defaults reading each batch from it. Each engine variant is fed as the runner would feed it (see
  `Trainer.loops_on_device`).
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
  trainers = {"engine": engine(False), "defaults": engine(None),
              "best": engine(False), "best_xla": engine(True),
              "synthetic": engine(False), "synthetic_xla": engine(True)}
  if sharded is not None:
    trainers["shards"] = engine(None)

  def feed(key):
    """What the runner would feed this trainer: its own batches where the
    loop builds them, else tf.data; one in-memory batch if synthetic."""
    trainer = trainers[key]
    calls = 1 if key == "engine" else steps_per_loop
    if key.startswith("synthetic"):
      if trainer.loops_on_device:
        return _one_batch_source(images, options, calls, one_batch)
      return iter(tf.data.Dataset.from_tensors(one_batch).repeat())
    return trainer.training_batches(
        sharded if key == "shards" else images, options, calls, 0, 1 << 40)

  feeds = {key: feed(key) for key in trainers}
  fits = {"fit": fit_baseline.fit_runner(spec, data, model_config,
                                         batch_size, steps),
          "fit_tuned": fit_baseline.fit_runner(
              spec, data, model_config, batch_size, steps,
              jit_compile=True, steps_per_execution=steps_per_loop)}

  def run_engine(key, count):
    return throughput.examples_per_sec(
        trainers[key], feeds[key], count,
        1 if key == "engine" else steps_per_loop, batch_size)

  run = {**fits, **{key: functools.partial(run_engine, key)
                    for key in trainers}}
  variants = list(run)
  # Warm-up: traces and compiles everything, fills pipelines. Then a short
  # round sizes the timed ones.
  for key in variants:
    run[key](max(10, steps // 4) + steps_per_loop)
  slowest = min(run[key](10 + steps_per_loop) for key in variants)
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
