"""Typed, frozen configuration of one run: every setting, declared once.

Each field is a `settings.setting` with its default, help and check; the absl
flags, `config.json`, the saved flagfile and the tools' flags derive from these
declarations. `engine.main` builds a `RunConfig` once from the parsed flags;
everything below it takes these objects and never reads `absl.flags.FLAGS`.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from engine.config import settings
from engine.config.settings import setting

BINARIZE_MODES = ("none", "static", "dynamic")
RECONSTRUCTION_LOSSES = ("bernoulli", "gaussian", "discretized_logistic",
                         "gaussian_learned")
# Likelihoods with a learned per-sub-pixel scale (`models.base.LearnedScale`).
LEARNED_SCALE_LOSSES = ("discretized_logistic", "gaussian_learned")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored",
              "parameter_server", "tpu")
PRECISION_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
OPTIMIZERS = ("adam", "sgd")
OBJECTIVES = ("elbo", "iwae")
LR_SCHEDULES = ("constant", "iwae")
NAN_POLICIES = ("stop", "skip")


def _model_names():
  import models  # pylint: disable=g-import-not-at-top  (the registry)
  return models.names()


def _model_help():
  import models  # pylint: disable=g-import-not-at-top
  return "Which VAE to train. " + "; ".join(
      f"{name}: {models.get(name).description}" for name in models.names())


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the images come from and how they are preprocessed (each field's
  help says what it means)."""

  dataset: str = setting(
      "mnist", "Dataset name when --data_dir is not given: mnist, "
      "fashion_mnist, or any tensorflow-datasets image dataset (any height, "
      "width and channels).")
  data_dir: Optional[str] = setting(
      None, "Where the images are: a directory holding the four IDX files "
      "(train-images-idx3-ubyte, train-labels-idx1-ubyte, "
      "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; .gz or raw); else a "
      "directory of PNG/JPEG/BMP/GIF images (class sub-folders are labels; "
      "a test/ sub-folder, or --test_fraction held out); or an .npz file "
      "laid out as Keras' mnist.npz. Default: a known local copy "
      "(/usr/share/datasets/fashion-mnist for fashion_mnist), else "
      "tensorflow-datasets by --dataset.", check=settings.EXISTING_PATH,
      absolute_path=True)
  image_size: Optional[tuple[int, int]] = setting(
      None, "H[,W]: resize images on load to this size, after a center crop "
      "to its aspect ratio (folders and .npz; default: as they are).",
      parse=lambda v: settings.int_tuple(v, (1, 2), minimum=1),
      check=(lambda v: v is None or min(v) > 0,
             "must be H or H,W with positive sizes"))
  channels: Optional[int] = setting(
      None, "1 or 3: convert images on load to grey or RGB (folders and "
      ".npz; default: as they are).",
      check=(lambda v: v in (None, 1, 3), "must be 1 or 3"))
  test_fraction: float = setting(
      0.1, "For a folder of images without a test/ sub-folder: the fraction "
      "held out for testing, drawn with --seed.",
      check=(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)"))

  def __post_init__(self):
    if self.image_size is not None:  # A list when read back from JSON.
      object.__setattr__(self, "image_size", tuple(self.image_size))
  binarize: str = setting(
      "none", "none: grey levels in [0,1]; static: thresholded at 0.5 once; "
      "dynamic: a fresh Bernoulli sample of each image every time it is "
      "used.", choices=BINARIZE_MODES)
  noise_factor: Optional[float] = setting(
      None, "Std-dev of Gaussian noise added to training and test inputs "
      "(targets stay clean; noisy inputs are clipped to [0,1]). Default: the "
      "model's (0.2 for denoising, 0 otherwise).",
      check=settings.NON_NEGATIVE, model_default=lambda spec: spec.default_noise_factor)
  max_train_examples: Optional[int] = setting(
      None, "Train on only the first N training examples (quick "
      "experiments).", check=settings.POSITIVE)
  download_timeout_s: float = setting(
      30.0, "Seconds a tensorflow-datasets download may take before the run "
      "stops and asks for --data_dir.", flag="download_timeout",
      check=settings.POSITIVE)
  tfds_data_dir: Optional[str] = setting(
      None, "Where tensorflow-datasets keeps prepared datasets, for "
      "--dataset (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets).")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which VAE to build and the objective it is trained with."""

  name: str = setting("conv", _model_help, flag="model",
                      choices=_model_names)
  latent_dim: Optional[int] = setting(
      None, "Size of the latent code. Default: the model's (2; 40 for "
      "denoising; 50 for iwae_mlp).", check=settings.POSITIVE,
      model_default=lambda spec: spec.default_latent_dim)
  reconstruction_loss: str = setting(
      "bernoulli", "Decoder likelihood, summed over sub-pixels, in nats: "
      "bernoulli (cross-entropy from logits); gaussian (fixed "
      "--gaussian_stddev around the decoder's mean); discretized_logistic "
      "(a logistic over the 256 levels of 8-bit images with a learned scale "
      "per sub-pixel, as in IAF and PixelCNN++; reports bits/dim); "
      "gaussian_learned (a Gaussian with a learned variance per sub-pixel).",
      choices=RECONSTRUCTION_LOSSES)
  gaussian_stddev: float = setting(0.1, "Std-dev of the Gaussian "
                                   "likelihood.", check=settings.POSITIVE)
  beta: float = setting(
      1.0, "Weight of the KL term in the training loss (1: the ELBO). "
      "Evaluation always reports the ELBO (beta 1).",
      check=settings.NON_NEGATIVE)
  objective: str = setting(
      "elbo", "Training objective: elbo, or iwae (the --iw_samples-sample "
      "importance-weighted bound of Burda et al., 2015).", choices=OBJECTIVES)
  iw_samples: int = setting(
      1, "Samples of z per training example (K): elbo averages its "
      "reconstruction term over them; iwae is the K-sample bound.",
      check=settings.POSITIVE)
  kl_warmup_steps: int = setting(
      0, "Ramp the KL weight linearly from 0 to --beta over this many steps "
      "(0: off; elbo objective only).", check=settings.NON_NEGATIVE)
  free_bits: float = setting(
      0.0, "Free bits: charge each latent unit at least this many nats of "
      "batch-averaged KL (0: off; elbo objective only).",
      check=settings.NON_NEGATIVE)
  conditional: bool = setting(
      False, "Condition encoder and decoder on the image's class label "
      "(a conditional VAE, Sohn et al., 2015), for any --model; needs "
      "labelled data. Exports then take a label: decode(z, label), "
      "sample(num, label).")

  def __post_init__(self):
    _resolve_model_defaults(self, "model", self.name)

  @property
  def learned_scale(self) -> bool:
    """The likelihood has a learned scale per sub-pixel."""
    return self.reconstruction_loss in LEARNED_SCALE_LOSSES


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The outer loop: how long, how often, where to write."""

  model_dir: str = setting(
      "/tmp/vae_engine", "Directory for checkpoints, TensorBoard logs, "
      "figures and the run's config (any TensorFlow filesystem: gs://, "
      "hdfs://, ram://). Re-running resumes from it.",
      check=settings.NOT_EMPTY)
  batch_size: int = setting(128, "Global batch size (summed over replicas).",
                            check=settings.POSITIVE)
  epochs: int = setting(10, "Passes over the training set (ignored when "
                        "--train_steps is set).", check=settings.POSITIVE)
  train_steps: Optional[int] = setting(
      None, "Total optimizer steps of the run (overrides --epochs).",
      check=settings.POSITIVE)
  steps_per_loop: int = setting(100, "Training steps run inside one "
                                "compiled call.", check=settings.POSITIVE)
  learning_rate: float = setting(1e-3, "The optimizer's learning rate.",
                                 check=settings.POSITIVE)
  lr_schedule: str = setting(
      "constant", "constant, or iwae: Burda et al.'s 3^i passes at "
      "--learning_rate * 10^(-i/7) for i = 0..7 (3,280 passes), with their "
      "Adam epsilon 1e-4.", choices=LR_SCHEDULES)
  optimizer: str = setting("adam", "adam, or sgd (plain gradient descent).",
                           choices=OPTIMIZERS)
  seed: int = setting(0, "Seeds weights, data order, binarization, noise "
                      "and sampling; a run is reproducible for a given seed.")
  eval_every: int = setting(0, "Evaluate the test ELBO every N steps (0: "
                            "only at the end).", check=settings.NON_NEGATIVE)
  checkpoint_every: int = setting(
      1000, "Save a checkpoint every N steps (and always at the end; 0: "
      "only at the end).", check=settings.NON_NEGATIVE)
  log_every: int = setting(100, "Print progress and write summaries every N "
                           "steps.", check=settings.POSITIVE)
  keep_checkpoints: int = setting(3, "Number of checkpoints to keep.",
                                  check=settings.POSITIVE)
  export_dir: Optional[str] = setting(
      None, "Write a SavedModel here at the end of training (versioned: "
      "<export_dir>/<step>/; any TensorFlow filesystem).")
  mixed_precision: str = setting(
      "float32", "Compute dtype policy: float32, mixed_bfloat16, "
      "mixed_float16 (loss-scaled; GPUs), or auto: each policy this "
      "hardware has units for is measured for a few hundred steps of this "
      "model at start-up, and one is taken only where it is at least 5% "
      "faster than float32 (the choice is kept in <model_dir>/autotune.json "
      "and config.json, so a resumed run keeps it; the start line gives the "
      "measured ratio). Loss, KL and logits stay float32.",
      choices=PRECISION_POLICIES)
  jit_compile: Optional[bool] = setting(
      None, "Compile training with XLA: on one device the whole step (many "
      "steps per XLA call unless the model has convolutions and runs on a "
      "CPU); under --strategy the forward and backward pass. Default (auto): "
      "on, except for models with convolutions on a CPU, whose XLA gradients "
      "are slower there than oneDNN's (tools/benchmark.py measures both); "
      "the start line says which.")
  figures: bool = setting(True, "Write matplotlib figures into "
                          "<model_dir>/figures at the end of training.")
  eval_nll_samples: int = setting(
      0, "Also estimate the test negative log-likelihood at every evaluation "
      "with this many importance samples per image (5000 in the IWAE paper; "
      "0: off).", check=settings.NON_NEGATIVE)
  sample_quality: bool = setting(
      False, "At the final evaluation (and in tools/evaluate.py), score "
      "10,000 prior samples with a classifier trained on the training "
      "split's labels (cached in <model_dir>/classifier): the entropy of "
      "their predicted classes and their Fréchet distance to the test set "
      "in the classifier's feature space (not FID: no Inception weights); "
      "for --conditional models, the fraction classified as their label.")
  nan_policy: str = setting(
      "stop", "On a non-finite loss: stop (name the step and the term; the "
      "last good checkpoint stays) or skip (drop that update; stop after "
      "--max_skipped_steps in a row).", choices=NAN_POLICIES)
  max_skipped_steps: int = setting(
      10, "With --nan_policy=skip: consecutive skipped steps that stop the "
      "run.", check=settings.POSITIVE)
  allow_slow: bool = setting(
      False, "Run settings that are known to be very slow on this machine "
      "(mixed_float16 without a GPU) instead of refusing them.")
  profile_steps: Optional[tuple[int, int]] = setting(
      None, "FIRST,LAST: capture a TensorBoard profiler trace of training "
      "steps [FIRST, LAST) into <model_dir>/plugins/profile (summarize it "
      "with tools/profile_summary.py).", parse=settings.int_tuple,
      check=(lambda v: v is None or 0 <= v[0] < v[1],
             "must be FIRST,LAST with 0 <= FIRST < LAST"))

  def __post_init__(self):
    if self.profile_steps is not None:  # A list when read back from JSON.
      object.__setattr__(self, "profile_steps", tuple(self.profile_steps))


@dataclasses.dataclass(frozen=True)
class DistributionConfig:
  """How training is spread over devices and machines."""

  strategy: str = setting(
      "default", "tf.distribute strategy: default (one device, no "
      "distribution), one_device, mirrored (all local GPUs, or "
      "--cpu_devices logical CPUs), multi_worker_mirrored (cluster from "
      "TF_CONFIG). tpu and parameter_server fail with the reason.",
      choices=STRATEGIES)
  cpu_devices: int = setting(
      0, "Testing aid: split the host CPU into N logical devices so mirrored "
      "runs without GPUs (0: don't split).", check=settings.NON_NEGATIVE)
  num_gpus: Optional[int] = setting(
      None, "Use the first N local GPUs (default: all).",
      check=settings.POSITIVE)
  collective_timeout_s: float = setting(
      30.0, "Seconds a cross-worker collective may take before the job fails "
      "(a dead peer ends the job instead of hanging it).",
      flag="collective_timeout", check=settings.POSITIVE)
  peer_wait_timeout_s: float = setting(
      120.0, "Seconds a worker waits for every TF_CONFIG peer to connect.",
      flag="peer_wait_timeout", check=settings.POSITIVE)
  tpu: str = setting("", "TPU name or address for --strategy=tpu.")


def _resolve_model_defaults(section, name: str, model: str) -> None:
  """Fills the settings of `section` (a frozen dataclass, named `name`)
  that are None and have a model default, from the model's spec."""
  import models  # pylint: disable=g-import-not-at-top  (the registry)
  for declared in settings.declared(name, type(section)):
    if declared.model_default and getattr(section, declared.field) is None:
      object.__setattr__(section, declared.field,
                         declared.model_default(models.get(model)))
