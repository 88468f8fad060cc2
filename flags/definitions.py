"""The engine's absl flags, with parse-time validation.

Only `engine.main` (and the tools, which are entry points too) call `define()`
and read the parsed values; they turn them into `engine.config.RunConfig`.
Validators raise `absl.flags.ValidationError` with a one-line message that
names the flag.
"""

from __future__ import annotations

import os

from absl import flags

import models
from engine import config as config_lib

_defined = False


def define(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines every engine flag on `flag_values` (once) and its validators."""
  global _defined
  if _defined and flag_values is flags.FLAGS:
    return
  _define_data_flags(flag_values)
  _define_model_flags(flag_values)
  _define_train_flags(flag_values)
  _register_validators(flag_values)
  if flag_values is flags.FLAGS:
    _defined = True


def _define_data_flags(fv):
  flags.DEFINE_string(
      "dataset", "mnist",
      "Dataset name: mnist, fashion_mnist, or any tensorflow-datasets dataset "
      "of 28x28x1 images.", flag_values=fv)
  flags.DEFINE_string(
      "data_dir", None,
      "Directory holding the four IDX files (train-images-idx3-ubyte, "
      "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
      "t10k-labels-idx1-ubyte; .gz or raw). Default: a known local copy "
      "(/usr/share/datasets/fashion-mnist for fashion_mnist), else "
      "tensorflow-datasets.", flag_values=fv)
  flags.DEFINE_enum(
      "binarize", "none", config_lib.BINARIZE_MODES,
      "none: grey levels in [0,1]; static: thresholded at 0.5 once; dynamic: "
      "a fresh Bernoulli sample of each image every time it is used.",
      flag_values=fv)
  flags.DEFINE_float(
      "noise_factor", None,
      "Std-dev of Gaussian noise added to training and test inputs (targets "
      "stay clean; noisy inputs are clipped to [0,1]). Default: the model's "
      "(0.2 for denoising, 0 otherwise).", flag_values=fv)
  flags.DEFINE_integer(
      "max_train_examples", None,
      "Train on only the first N training examples (quick experiments).",
      flag_values=fv)
  flags.DEFINE_float(
      "download_timeout", 30.0,
      "Seconds a tensorflow-datasets download may take before the run stops "
      "and asks for --data_dir.", flag_values=fv)


def _define_model_flags(fv):
  described = "; ".join(f"{n}: {models.get(n).description}"
                        for n in models.names())
  flags.DEFINE_enum("model", "conv", models.names(),
                    f"Which VAE to train. {described}", flag_values=fv)
  flags.DEFINE_integer(
      "latent_dim", None,
      "Size of the latent code. Default: the model's (2, or 40 for "
      "denoising).", flag_values=fv)
  flags.DEFINE_enum(
      "reconstruction_loss", "bernoulli", config_lib.RECONSTRUCTION_LOSSES,
      "Decoder likelihood: bernoulli (cross-entropy from logits) or gaussian "
      "(fixed --gaussian_stddev around the decoder's mean). Summed over "
      "pixels, in nats.", flag_values=fv)
  flags.DEFINE_float("gaussian_stddev", 0.1,
                     "Std-dev of the Gaussian likelihood.", flag_values=fv)
  flags.DEFINE_float(
      "beta", 1.0,
      "Weight of the KL term in the training loss (1: the ELBO). Evaluation "
      "always reports the ELBO (beta 1).", flag_values=fv)
  flags.DEFINE_enum(
      "objective", "elbo", config_lib.OBJECTIVES,
      "Training objective: elbo, or iwae (the --iw_samples-sample "
      "importance-weighted bound of Burda et al., 2015).", flag_values=fv)
  flags.DEFINE_integer(
      "iw_samples", 1,
      "Samples of z per training example (K): elbo averages its "
      "reconstruction term over them; iwae is the K-sample bound.",
      flag_values=fv)
  flags.DEFINE_integer(
      "kl_warmup_steps", 0,
      "Ramp the KL weight linearly from 0 to --beta over this many steps "
      "(0: off; elbo objective only).", flag_values=fv)
  flags.DEFINE_float(
      "free_bits", 0.0,
      "Free bits: charge each latent unit at least this many nats of "
      "batch-averaged KL (0: off; elbo objective only).", flag_values=fv)


def _define_train_flags(fv):
  flags.DEFINE_string("model_dir", "/tmp/vae_engine",
                      "Directory for checkpoints, TensorBoard logs, figures "
                      "and the run's config. Re-running resumes from it.",
                      flag_values=fv)
  flags.DEFINE_integer("batch_size", 128,
                       "Global batch size (summed over replicas).",
                       flag_values=fv)
  flags.DEFINE_integer("epochs", 10,
                       "Passes over the training set (ignored when "
                       "--train_steps is set).", flag_values=fv)
  flags.DEFINE_integer("train_steps", None,
                       "Total optimizer steps of the run (overrides --epochs).",
                       flag_values=fv)
  flags.DEFINE_integer("steps_per_loop", 100,
                       "Training steps run inside one compiled call.",
                       flag_values=fv)
  flags.DEFINE_float("learning_rate", 1e-3, "The optimizer's learning rate.",
                     flag_values=fv)
  flags.DEFINE_enum(
      "lr_schedule", "constant", config_lib.LR_SCHEDULES,
      "constant, or iwae: Burda et al.'s 3^i passes at --learning_rate * "
      "10^(-i/7) for i = 0..7 (3,280 passes), with their Adam epsilon 1e-4.",
      flag_values=fv)
  flags.DEFINE_enum("optimizer", "adam", config_lib.OPTIMIZERS,
                    "adam, or sgd (plain gradient descent).", flag_values=fv)
  flags.DEFINE_integer("seed", 0,
                       "Seeds weights, data order, binarization, noise and "
                       "sampling; a run is reproducible for a given seed.",
                       flag_values=fv)
  flags.DEFINE_integer("eval_every", 0,
                       "Evaluate the test ELBO every N steps (0: only at the "
                       "end).", flag_values=fv)
  flags.DEFINE_integer("checkpoint_every", 1000,
                       "Save a checkpoint every N steps (and always at the "
                       "end; 0: only at the end).", flag_values=fv)
  flags.DEFINE_integer("log_every", 100,
                       "Print progress and write summaries every N steps.",
                       flag_values=fv)
  flags.DEFINE_integer("keep_checkpoints", 3,
                       "Number of checkpoints to keep.", flag_values=fv)
  flags.DEFINE_string("export_dir", None,
                      "Write a SavedModel here at the end of training "
                      "(versioned: <export_dir>/<step>/).", flag_values=fv)
  flags.DEFINE_enum(
      "strategy", "default", config_lib.STRATEGIES,
      "tf.distribute strategy: default (one device, no distribution), "
      "one_device, mirrored (all local GPUs, or --cpu_devices logical CPUs), "
      "multi_worker_mirrored (cluster from TF_CONFIG). tpu and "
      "parameter_server fail with the reason.", flag_values=fv)
  flags.DEFINE_integer(
      "cpu_devices", 0,
      "Testing aid: split the host CPU into N logical devices so mirrored "
      "runs without GPUs (0: don't split).", flag_values=fv)
  flags.DEFINE_integer("num_gpus", None,
                       "Use the first N local GPUs (default: all).",
                       flag_values=fv)
  flags.DEFINE_float(
      "collective_timeout", 30.0,
      "Seconds a cross-worker collective may take before the job fails (a "
      "dead peer ends the job instead of hanging it).", flag_values=fv)
  flags.DEFINE_float(
      "peer_wait_timeout", 120.0,
      "Seconds a worker waits for every TF_CONFIG peer to connect.",
      flag_values=fv)
  flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.",
                      flag_values=fv)
  flags.DEFINE_enum("mixed_precision", "float32",
                    config_lib.PRECISION_POLICIES,
                    "Compute dtype policy: float32, mixed_bfloat16, "
                    "mixed_float16 (loss-scaled; GPUs), or auto (the fastest "
                    "here: bf16 on TPUs, GPUs of compute capability >= 8.0 "
                    "and AMX CPUs; fp16 on GPUs of 7.x; else float32; the "
                    "start line says why). Loss, KL and logits stay "
                    "float32.", flag_values=fv)
  flags.DEFINE_boolean("jit_compile", False,
                       "Compile training with XLA: on one device the whole "
                       "step (many steps per XLA call unless the model has "
                       "convolutions and runs on a CPU); under --strategy "
                       "the forward and backward pass.", flag_values=fv)
  flags.DEFINE_boolean("figures", True,
                       "Write matplotlib figures into <model_dir>/figures at "
                       "the end of training.", flag_values=fv)
  flags.DEFINE_integer(
      "eval_nll_samples", 0,
      "Also estimate the test negative log-likelihood at every evaluation "
      "with this many importance samples per image (5000 in the IWAE paper; "
      "0: off).", flag_values=fv)
  flags.DEFINE_enum(
      "nan_policy", "stop", config_lib.NAN_POLICIES,
      "On a non-finite loss: stop (name the step and the term; the last good "
      "checkpoint stays) or skip (drop that update; stop after "
      "--max_skipped_steps in a row).", flag_values=fv)
  flags.DEFINE_integer(
      "max_skipped_steps", 10,
      "With --nan_policy=skip: consecutive skipped steps that stop the run.",
      flag_values=fv)
  flags.DEFINE_boolean(
      "allow_slow", False,
      "Run settings that are known to be very slow on this machine "
      "(mixed_float16 without a GPU) instead of refusing them.",
      flag_values=fv)
  flags.DEFINE_list(
      "profile_steps", [],
      "FIRST,LAST: capture a TensorBoard profiler trace of training steps "
      "[FIRST, LAST) into <model_dir>/plugins/profile (summarize it with "
      "tools/profile_summary.py).", flag_values=fv)


def _positive(name, fv, allow_none=False):
  flags.register_validator(
      name, lambda v: (allow_none and v is None) or (v is not None and v > 0),
      message=f"--{name} must be a positive number", flag_values=fv)


def _non_negative(name, fv):
  flags.register_validator(name, lambda v: v is not None and v >= 0,
                           message=f"--{name} must be zero or positive",
                           flag_values=fv)


def _register_validators(fv):
  for name in ("batch_size", "epochs", "steps_per_loop", "log_every",
               "keep_checkpoints", "learning_rate", "gaussian_stddev",
               "download_timeout", "iw_samples", "max_skipped_steps"):
    _positive(name, fv)
  for name in ("latent_dim", "train_steps", "max_train_examples", "num_gpus"):
    _positive(name, fv, allow_none=True)
  for name in ("collective_timeout", "peer_wait_timeout"):
    _positive(name, fv)
  for name in ("eval_every", "checkpoint_every", "beta", "cpu_devices",
               "kl_warmup_steps", "free_bits", "eval_nll_samples"):
    _non_negative(name, fv)
  flags.register_validator(
      "noise_factor", lambda v: v is None or v >= 0,
      message="--noise_factor must be zero or positive", flag_values=fv)
  flags.register_validator(
      "data_dir", lambda v: v is None or os.path.isdir(v),
      message="--data_dir is not an existing directory", flag_values=fv)
  flags.register_multi_flags_validator(
      ["objective", "kl_warmup_steps", "free_bits"],
      lambda v: v["objective"] == "elbo" or not (v["kl_warmup_steps"]
                                                 or v["free_bits"]),
      message="--kl_warmup_steps and --free_bits shape the ELBO's KL term; "
      "they cannot be used with --objective=iwae", flag_values=fv)
  flags.register_validator(
      "model_dir", bool, message="--model_dir must not be empty",
      flag_values=fv)
  flags.register_validator(
      "profile_steps", lambda v: not v or _profile_range(v) is not None,
      message="--profile_steps must be FIRST,LAST with 0 <= FIRST < LAST",
      flag_values=fv)


def _profile_range(values):
  """[FIRST, LAST] strings -> (first, last), or None if not a valid range."""
  try:
    first, last = (int(v) for v in values)
  except ValueError:
    return None
  return (first, last) if 0 <= first < last else None


def to_config(fv: flags.FlagValues = flags.FLAGS) -> config_lib.RunConfig:
  """Turns parsed flags into the run's frozen config, filling model defaults."""
  spec = models.get(fv.model)
  noise_factor = fv.noise_factor
  if noise_factor is None:
    noise_factor = spec.default_noise_factor
  return config_lib.RunConfig(
      data=config_lib.DataConfig(
          dataset=fv.dataset,
          # Absolute, so tools reading the saved config work from anywhere.
          data_dir=fv.data_dir and os.path.abspath(fv.data_dir),
          binarize=fv.binarize,
          noise_factor=noise_factor,
          max_train_examples=fv.max_train_examples,
          download_timeout_s=fv.download_timeout,
      ),
      model=config_lib.ModelConfig(
          name=fv.model,
          latent_dim=fv.latent_dim or spec.default_latent_dim,
          reconstruction_loss=fv.reconstruction_loss,
          gaussian_stddev=fv.gaussian_stddev,
          beta=fv.beta,
          objective=fv.objective,
          iw_samples=fv.iw_samples,
          kl_warmup_steps=fv.kl_warmup_steps,
          free_bits=fv.free_bits,
      ),
      train=config_lib.TrainConfig(
          model_dir=fv.model_dir,
          batch_size=fv.batch_size,
          epochs=fv.epochs,
          train_steps=fv.train_steps,
          steps_per_loop=fv.steps_per_loop,
          learning_rate=fv.learning_rate,
          lr_schedule=fv.lr_schedule,
          optimizer=fv.optimizer,
          seed=fv.seed,
          eval_every=fv.eval_every,
          checkpoint_every=fv.checkpoint_every,
          log_every=fv.log_every,
          keep_checkpoints=fv.keep_checkpoints,
          export_dir=fv.export_dir,
          mixed_precision=fv.mixed_precision,
          jit_compile=fv.jit_compile,
          figures=fv.figures,
          eval_nll_samples=fv.eval_nll_samples,
          nan_policy=fv.nan_policy,
          max_skipped_steps=fv.max_skipped_steps,
          allow_slow=fv.allow_slow,
          profile_steps=(_profile_range(fv.profile_steps)
                         if fv.profile_steps else None),
      ),
      distribution=config_lib.DistributionConfig(
          strategy=fv.strategy,
          cpu_devices=fv.cpu_devices,
          num_gpus=fv.num_gpus,
          collective_timeout_s=fv.collective_timeout,
          peer_wait_timeout_s=fv.peer_wait_timeout,
          tpu=fv.tpu,
      ),
  )
