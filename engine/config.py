"""Typed, frozen configuration of one run.

`engine.main` builds a `RunConfig` once from the parsed flags; everything below
it takes these objects and never reads `absl.flags.FLAGS`. The config is
written to `<model_dir>/config.json` (and as a flagfile) so tools can reload a
run without repeating its flags.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

BINARIZE_MODES = ("none", "static", "dynamic")
RECONSTRUCTION_LOSSES = ("bernoulli", "gaussian")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored",
              "parameter_server", "tpu")
PRECISION_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
OPTIMIZERS = ("adam", "sgd")
OBJECTIVES = ("elbo", "iwae")
LR_SCHEDULES = ("constant", "iwae")
NAN_POLICIES = ("stop", "skip")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the images come from and how they are preprocessed.

  Attributes:
    dataset: `mnist`, `fashion_mnist`, or any TFDS dataset of 28x28x1 images.
    data_dir: Directory holding the four IDX files, or None to use a known
      local copy or tensorflow-datasets.
    binarize: `none` (grey levels in [0, 1]), `static` (thresholded at 0.5
      once) or `dynamic` (a fresh Bernoulli sample every time an image is
      used).
    noise_factor: Standard deviation of Gaussian noise added to the inputs
      (targets stay clean); 0 disables it.
    max_train_examples: Use only the first N training examples (None: all).
    download_timeout_s: Bound on a tensorflow-datasets download attempt.
  """

  dataset: str = "mnist"
  data_dir: Optional[str] = None
  binarize: str = "none"
  noise_factor: float = 0.0
  max_train_examples: Optional[int] = None
  download_timeout_s: float = 30.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Which VAE to build and the objective it is trained with.

  Attributes:
    name: Registered model name (see `models.registry`).
    latent_dim: Size of the latent code.
    reconstruction_loss: `bernoulli` (cross-entropy from logits) or
      `gaussian` (fixed-variance Gaussian around the decoder's mean).
    gaussian_stddev: The fixed standard deviation of the Gaussian likelihood.
    beta: Weight of the KL term in the training loss (1 gives the ELBO).
    objective: `elbo` or `iwae` (the importance-weighted bound).
    iw_samples: Samples of z per example in training (K): the ELBO averages
      over them; IWAE is the K-sample bound.
    kl_warmup_steps: The KL weight grows linearly from 0 to beta over this
      many steps (0: no warm-up).
    free_bits: Minimum nats charged per latent unit (batch-averaged KL;
      0: off).
  """

  name: str = "conv"
  latent_dim: int = 2
  reconstruction_loss: str = "bernoulli"
  gaussian_stddev: float = 0.1
  beta: float = 1.0
  objective: str = "elbo"
  iw_samples: int = 1
  kl_warmup_steps: int = 0
  free_bits: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The outer loop: how long, how often, where to write.

  Attributes:
    model_dir: Directory for checkpoints, summaries, figures and config.
    batch_size: Global batch size (summed over replicas).
    epochs: Passes over the training set; used when train_steps is None.
    train_steps: Total optimizer steps; overrides epochs when set.
    steps_per_loop: Steps run inside one compiled call.
    learning_rate: The optimizer's learning rate (the first stage's, with a
      schedule).
    lr_schedule: `constant`, or `iwae` (Burda et al.'s: 3^i passes at
      learning_rate * 10^(-i/7), i = 0..7).
    optimizer: `adam` or `sgd` (plain gradient descent).
    seed: Seeds weights, data order, binarization, noise and sampling.
    eval_every: Evaluate on the test split every N steps (0: only at the end).
    checkpoint_every: Save a checkpoint every N steps (0: only at the end).
    log_every: Log and write summaries every N steps.
    keep_checkpoints: How many checkpoints to keep.
    export_dir: Where to write the SavedModel at the end (None: no export).
    mixed_precision: Keras dtype policy name, or `auto`.
    jit_compile: Compile training with XLA: on one device the whole step
      (and, unless convolutions on a CPU, many steps per XLA call); under
      tf.distribute the forward and backward pass.
    figures: Write matplotlib figures at the end of training.
    eval_nll_samples: With K > 0, every evaluation also estimates the test
      log-likelihood with the K-sample importance-weighted bound.
    nan_policy: What a non-finite loss does: `stop` the run, or `skip` the
      update (and stop after `max_skipped_steps` in a row).
    max_skipped_steps: Consecutive skipped steps that end a `skip` run.
    allow_slow: Run settings known to be very slow here (mixed_float16 on a
      CPU) instead of refusing them.
    profile_steps: (first, last): capture a profiler trace of training steps
      [first, last) into <model_dir>/plugins/profile (None: no trace).
  """

  model_dir: str = "/tmp/vae_engine"
  batch_size: int = 128
  epochs: int = 10
  train_steps: Optional[int] = None
  steps_per_loop: int = 100
  learning_rate: float = 1e-3
  lr_schedule: str = "constant"
  optimizer: str = "adam"
  seed: int = 0
  eval_every: int = 0
  checkpoint_every: int = 1000
  log_every: int = 100
  keep_checkpoints: int = 3
  export_dir: Optional[str] = None
  mixed_precision: str = "float32"
  jit_compile: bool = False
  figures: bool = True
  eval_nll_samples: int = 0
  nan_policy: str = "stop"
  max_skipped_steps: int = 10
  allow_slow: bool = False
  profile_steps: Optional[tuple[int, int]] = None

  def __post_init__(self):
    if self.profile_steps is not None:  # A list when read back from JSON.
      object.__setattr__(self, "profile_steps", tuple(self.profile_steps))


@dataclasses.dataclass(frozen=True)
class DistributionConfig:
  """How training is spread over devices and machines.

  Attributes:
    strategy: tf.distribute strategy name (see `STRATEGIES`).
    cpu_devices: Split the host CPU into this many logical devices (0: don't);
      a testing aid that lets `mirrored` run without GPUs.
    num_gpus: Use the first N local GPUs for `mirrored` (None: all).
    collective_timeout_s: A cross-worker collective that takes longer fails,
      so a dead peer ends the job instead of hanging it.
    peer_wait_timeout_s: How long a worker waits for the cluster to assemble.
    tpu: TPU name or address for `tpu` (empty: discover).
  """

  strategy: str = "default"
  cpu_devices: int = 0
  num_gpus: Optional[int] = None
  collective_timeout_s: float = 30.0
  peer_wait_timeout_s: float = 120.0
  tpu: str = ""


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one run needs."""

  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  distribution: DistributionConfig = dataclasses.field(
      default_factory=DistributionConfig)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
    return cls(
        data=DataConfig(**values["data"]),
        model=ModelConfig(**values["model"]),
        train=TrainConfig(**values["train"]),
        distribution=DistributionConfig(**values.get("distribution", {})),
    )

  def to_flagfile(self) -> str:
    """Renders the config as absl flags that reproduce it (`--flagfile`)."""
    lines = []
    for section in (self.data, self.model, self.train, self.distribution):
      for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        flag = _FLAG_NAMES.get(field.name, field.name)
        if value is None:
          continue
        if isinstance(value, bool):
          lines.append(f"--{flag}" if value else f"--no{flag}")
        elif isinstance(value, tuple):
          lines.append(f"--{flag}={','.join(str(v) for v in value)}")
        else:
          lines.append(f"--{flag}={value}")
    return "\n".join(lines) + "\n"


# Config fields whose flag has another name.
_FLAG_NAMES = {"name": "model", "download_timeout_s": "download_timeout",
               "collective_timeout_s": "collective_timeout",
               "peer_wait_timeout_s": "peer_wait_timeout"}
