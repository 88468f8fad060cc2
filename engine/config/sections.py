"""Typed, frozen configuration of one run: every setting, declared once.

Each field is a `settings.setting` with its default, help and check; the absl
flags, `config.json`, the saved flagfile and the tools' flags derive from these
declarations. `engine.main` builds a `RunConfig` once from the parsed flags;
everything below it takes these objects and never reads `absl.flags.FLAGS`.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Optional

from engine.config import settings
from engine.config.settings import setting
from engine.errors import UserError
from engine.config.training import (  # noqa: F401  (every section here)
    KEEP_BEST, LR_SCHEDULES, NAN_POLICIES, OPTIMIZERS, PRECISION_POLICIES,
    TrainConfig)

BINARIZE_MODES = ("none", "static", "dynamic")
RECONSTRUCTION_LOSSES = ("bernoulli", "gaussian", "discretized_logistic",
                         "gaussian_learned")
# Likelihoods with a learned per-sub-pixel scale (`models.learned_scale.LearnedScale`).
LEARNED_SCALE_LOSSES = ("discretized_logistic", "gaussian_learned")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored",
              "parameter_server", "tpu")
OBJECTIVES = ("elbo", "iwae")


# Runs before the model registry (`models`, which imports TensorFlow and
# every installed builder) is first loaded for a check or a default. The
# command line checks its other flags before TensorFlow loads, and sets this
# to load TensorFlow its quiet way (`engine.startup`) at that point.
before_registry: Callable[[], None] = lambda: None


def _registry():
  """The model registry, loaded on first use (see `before_registry`)."""
  if "models" not in sys.modules:
    before_registry()
  import models  # pylint: disable=g-import-not-at-top
  return models


# The engine's own models (`models/__init__.py`), known without loading the
# registry; tests/models/test_models.py keeps the two lists equal.
ENGINE_MODELS = ("conv", "denoising", "dense", "iwae_mlp", "iwae_mlp2",
                 "lambda", "mlp")


def _model_problem(name: str) -> Optional[str]:
  """What is wrong with `--model=name` (None: it names a model)."""
  if name in ENGINE_MODELS:
    return None
  try:
    _registry().get(name)
  except KeyError as e:
    return e.args[0]
  except UserError as e:  # A user's builder that cannot be loaded.
    return str(e).split(": ", 1)[-1]
  return None


def _model_help():
  # Describing installed builders imports them (a broken one is described
  # by why it cannot be loaded), as --helpfull and --list_models promise;
  # until the registry is loaded (a command line being checked before
  # TensorFlow starts), the help points at --list_models instead.
  intro = ("Which VAE to train: one of the engine's, an installed package's "
           "(entry-point group vae_engine.models), or any builder as "
           "package.module:function (see vae-engine --list_models).")
  if "models" not in sys.modules:
    return intro
  return intro + " " + "; ".join(
      f"{name}: {text}" for name, text in _registry().registry.described())


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the images come from and how they are preprocessed (each field's
  help says what it means)."""

  dataset: str = setting(
      "mnist", "Dataset name when --data_dir is not given: mnist, "
      "fashion_mnist, or any tensorflow-datasets image dataset (any height, "
      "width and channels).", resume_safe=True)
  data_dir: Optional[str] = setting(
      None, "Where the images are: the four IDX files, a folder of images, "
      "an .npz file, or shards from vae-engine convert_dataset. IDX: "
      "train-images-idx3-ubyte, train-labels-idx1-ubyte, "
      "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (.gz or raw); a "
      "folder: PNG/JPEG/BMP/GIF images (class sub-folders are labels; a "
      "test/ sub-folder, or --test_fraction held out); .npz: laid out as "
      "Keras' mnist.npz; shards: a directory holding "
      "vae_engine_shards.json. Default: a known local copy "
      "(/usr/share/datasets/fashion-mnist for fashion_mnist), else "
      "tensorflow-datasets by --dataset.", check=settings.EXISTING_PATH,
      absolute_path=True, resume_safe=True)
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
    settings.check_section(self, "data")  # (A JSON list becomes a tuple.)
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
      check=settings.POSITIVE, resume_safe=True)
  tfds_data_dir: Optional[str] = setting(
      None, "Where tensorflow-datasets keeps prepared datasets, for "
      "--dataset (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets).",
      resume_safe=True)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which VAE to build and the objective it is trained with."""

  name: str = setting("conv", _model_help, flag="model",
                      validate=_model_problem)
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
    settings.check_section(self, "model")
    _resolve_model_defaults(self, "model", self.name)
    if self.latent_dim is None:
      raise settings.ConfigError(
          f"--latent_dim: --model={self.name} has no default latent size "
          "(its builder's latent_dim has no default); pass --latent_dim")

  @property
  def learned_scale(self) -> bool:
    """The likelihood has a learned scale per sub-pixel."""
    return self.reconstruction_loss in LEARNED_SCALE_LOSSES


@dataclasses.dataclass(frozen=True)
class DistributionConfig:
  """How training is spread over devices and machines."""

  strategy: str = setting(
      "default", "tf.distribute strategy: default (one device, no "
      "distribution), one_device, mirrored (all local GPUs, or "
      "--cpu_devices logical CPUs), multi_worker_mirrored (cluster from "
      "TF_CONFIG). tpu and parameter_server fail with the reason.",
      choices=STRATEGIES, resume_safe=True)
  cpu_devices: int = setting(
      0, "Testing aid: split the host CPU into N logical devices so mirrored "
      "runs without GPUs (0: don't split).", check=settings.NON_NEGATIVE,
      resume_safe=True)
  num_gpus: Optional[int] = setting(
      None, "Use the first N local GPUs (default: all).",
      check=settings.POSITIVE, resume_safe=True)
  collective_timeout_s: float = setting(
      30.0, "Seconds a cross-worker collective may take before the job fails "
      "(a dead peer ends the job instead of hanging it).",
      flag="collective_timeout", check=settings.POSITIVE, resume_safe=True)
  peer_wait_timeout_s: float = setting(
      120.0, "Seconds a worker waits for every TF_CONFIG peer to connect.",
      flag="peer_wait_timeout", check=settings.POSITIVE, resume_safe=True)
  tpu: str = setting("", "TPU name or address for --strategy=tpu.",
                     resume_safe=True)

  def __post_init__(self):
    settings.check_section(self, "distribution")


def _resolve_model_defaults(section, name: str, model: str) -> None:
  """Fills the settings of `section` (a frozen dataclass, named `name`)
  that are None and have a model default, from the model's spec."""
  for declared in settings.declared(name, type(section), with_help=False):
    if declared.model_default and getattr(section, declared.field) is None:
      value = declared.model_default(_registry().get(model))
      plain = settings.normalized(declared, value)
      message = settings.problem(declared, plain)
      if message:
        raise settings.ConfigError(
            f"--model={model}: its default {declared.flag} is refused "
            f"({message}); fix the builder's default or pass "
            f"--{declared.flag}")
      object.__setattr__(section, declared.field, plain)
