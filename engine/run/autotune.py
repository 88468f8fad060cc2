"""`--mixed_precision=auto`: the policy chosen by measuring this model here.

A rule of thumb cannot know which models and batch sizes gain from bfloat16
or float16 on a given chip, so each policy the hardware has units for
(`precision.candidates`) trains a throwaway copy of the model on the run's
own batches for about `seconds` after compiling, and the fastest is taken
only if it beats float32 by `MARGIN` (float32 otherwise: the measurement is
noisy, and `auto` must never be slower than float32). The result is kept in
`<model_dir>/autotune.json`, so a resumed run keeps its choice without
measuring again; every worker of a job measures, and they agree on the sum
of their rates.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable, Optional

import tensorflow as tf

from engine.config import RunConfig
from engine.devices import precision
from engine.io import files
from engine.run import parts

AUTOTUNE_JSON = "autotune.json"
MARGIN = 1.05


def _measure(policy: str, config: RunConfig, create: Callable, images,
             labels, num_train: int, seconds: float) -> float:
  """Examples/sec of training a fresh copy of the model under `policy` on
  one device, after a first call that compiles."""
  strategy = tf.distribute.get_strategy()  # One device, no distribution.
  with precision.policy_scope(policy):
    vae = create()
    trainer = parts.make_trainer(vae, config, strategy, policy, num_train)
  steps = max(1, min(config.train.steps_per_loop, 20))
  batches = trainer.training_batches(images, parts.pipeline_options(config),
                                     steps, 0, 1 << 40,
                                     labels if vae.conditional else None)
  trainer.train(steps, batches)  # Traces and compiles.
  examples, started = 0, time.perf_counter()
  while examples == 0 or time.perf_counter() - started < seconds:
    examples += trainer.train(steps, batches).examples
  return examples / (time.perf_counter() - started)


def _agree(rates: dict, strategy: tf.distribute.Strategy) -> dict:
  """Every worker's rates summed, so all of them choose alike."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    names = sorted(rates)
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(
        lambda: tf.constant([rates[n] for n in names], tf.float32)),
                            axis=None).numpy()
    rates = dict(zip(names, (float(v) for v in total)))
  return rates


def choose(config: RunConfig, create: Callable, images, labels,
           num_train: int, strategy: tf.distribute.Strategy,
           is_chief: bool, seconds: float = 2.0,
           hardware: Optional[precision.Hardware] = None,
           cache: bool = True) -> precision.Choice:
  """The policy `--mixed_precision=auto` runs with, and why.

  Args:
    config: The run's configuration.
    create: Builds the model (under the policy in scope).
    images, labels: The training set, as tensors.
    num_train: Its size.
    strategy: The run's strategy (its workers agree on the rates).
    is_chief: Writes the choice into the model directory.
    seconds: Measured per candidate, after compiling.
    hardware: What to decide for (default: this machine).
    cache: Reuse and write `<model_dir>/autotune.json`.
  """
  hardware = hardware or precision.detect_hardware()
  candidates = precision.candidates(hardware)
  if len(candidates) == 1:
    return precision.Choice(candidates[0], "nothing to measure: no bfloat16 "
                            "or float16 units here")
  path = files.join(config.train.model_dir, AUTOTUNE_JSON)
  key = {"model": config.model.name, "latent_dim": config.model.latent_dim,
         "batch_size": config.train.batch_size, "candidates": candidates}
  if cache and files.gfile.exists(path):
    kept = json.loads(files.read_text(path))
    if kept.get("key") == key:
      return precision.Choice(kept["policy"], kept["reason"] + " (kept from "
                              f"{AUTOTUNE_JSON})")
  rates = {policy: _measure(policy, config, create, images, labels,
                            num_train, seconds) for policy in candidates}
  rates = _agree(rates, strategy)
  best = max(rates, key=rates.get)
  ratio = rates[best] / rates["float32"]
  policy = best if ratio >= MARGIN else "float32"
  shown = ", ".join(f"{name} {rate:,.0f}" for name, rate in rates.items())
  reason = (f"measured {rates[policy] / rates['float32']:.2f}x float32 "
            f"({shown} ex/s; another policy needs {MARGIN:.2f}x)")
  if cache and is_chief:
    files.gfile.makedirs(config.train.model_dir)
    files.write_atomically(path, json.dumps(
        {"key": key, "policy": policy, "reason": reason, "rates": rates},
        indent=2))
  return precision.Choice(policy, reason)


def resolved(config: RunConfig, choice: precision.Choice) -> RunConfig:
  """The config with `auto` replaced by what it chose (what config.json
  records, so that flags.txt reruns the same policy)."""
  if config.train.mixed_precision != "auto":
    return config
  return dataclasses.replace(config, train=dataclasses.replace(
      config.train, mixed_precision=choice.policy))
