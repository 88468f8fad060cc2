"""The optimizer and its learning-rate schedule (`--optimizer`,
`--lr_schedule`)."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

# Burda et al. (2015), section 5: for i = 0..7, 3^i passes over the training
# set at a learning rate of 1e-3 * 10^(-i/7); 3,280 passes in all.
IWAE_STAGES = 8


def iwae_boundaries(steps_per_epoch: int) -> list[int]:
  """The first (0-based) step of each of the IWAE schedule's later stages."""
  boundaries, passes = [], 0
  for stage in range(IWAE_STAGES - 1):
    passes += 3 ** stage
    boundaries.append(passes * steps_per_epoch)
  return boundaries


@keras.saving.register_keras_serializable("vae_engine")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warm-up over `warmup_steps`, then one decay (`--lr_schedule`).

  Step s (the optimizer's 0-based iteration count) of the warm-up trains at
  `base_rate * (s + 1) / warmup_steps`; after it, with t = s - warmup_steps:
  constant `base_rate`; cosine from `base_rate` to `min_fraction *
  base_rate` at t = decay_steps; exponential `base_rate * decay_rate^(t /
  decay_steps)`; piecewise `base_rate * decay_rate^k` past k of
  `boundaries`. Pure tensor arithmetic of the step: XLA-compilable, and a
  resumed run (its iteration count restored) continues on the same curve.
  """

  def __init__(self, kind: str, base_rate: float, warmup_steps: int = 0,
               decay_steps: int = 1, decay_rate: float = 1.0,
               min_fraction: float = 0.0, boundaries=(), scale=None):
    if kind not in ("constant", "cosine", "exponential", "piecewise"):
      raise ValueError(f"unknown learning-rate schedule {kind!r}")
    self.kind, self.base_rate = kind, float(base_rate)
    self.warmup_steps, self.decay_steps = int(warmup_steps), max(
        1, int(decay_steps))
    self.decay_rate, self.min_fraction = float(decay_rate), float(
        min_fraction)
    self.boundaries = tuple(int(b) for b in boundaries)
    self.scale = scale  # A variable the rate is multiplied by (recoveries).

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    t = tf.maximum(step - self.warmup_steps, 0.0)
    if self.kind == "cosine":
      progress = tf.minimum(t / self.decay_steps, 1.0)
      factor = self.min_fraction + (1 - self.min_fraction) * 0.5 * (
          1 + tf.cos(math.pi * progress))
    elif self.kind == "exponential":
      factor = self.decay_rate ** (t / self.decay_steps)
    elif self.kind == "piecewise":
      passed = tf.reduce_sum(tf.cast(
          t >= tf.constant(self.boundaries, tf.float32), tf.float32))
      factor = self.decay_rate ** passed
    else:
      factor = tf.constant(1.0)
    rate = self.base_rate * factor
    if self.warmup_steps:
      rate *= tf.minimum((step + 1) / self.warmup_steps, 1.0)
    if self.scale is not None:
      rate *= tf.cast(self.scale, rate.dtype)
    return rate

  def get_config(self) -> dict:
    return dict(kind=self.kind, base_rate=self.base_rate,
                warmup_steps=self.warmup_steps, decay_steps=self.decay_steps,
                decay_rate=self.decay_rate, min_fraction=self.min_fraction,
                boundaries=self.boundaries)


def learning_rate(schedule: str, base_rate: float, steps_per_epoch: int,
                  total_steps: int = 1, warmup_steps: int = 0,
                  decay_rate: float = 0.5, decay_steps=None,
                  min_fraction: float = 0.0, boundaries=None, scale=None):
  """The optimizer's learning rate: a float, or a schedule of its steps.

  Args:
    schedule: A `--lr_schedule` name (`iwae`: piecewise at the paper's
      stage boundaries, times 10^(-1/7) at each).
    base_rate: `--learning_rate`.
    steps_per_epoch: Optimizer steps per pass over the training set.
    total_steps: The run's last step (cosine decays until then).
    warmup_steps, decay_rate, decay_steps, min_fraction, boundaries: The
      `--warmup_steps`, `--lr_decay_*`, `--lr_min_fraction` and
      `--lr_boundaries` settings.
    scale: A variable the rate is multiplied by (`--nan_policy=recover`
      lowers it); a schedule then, even for a constant rate.

  Raises:
    ValueError: For an unknown schedule name.
  """
  if schedule == "constant" and not warmup_steps and scale is None:
    return base_rate  # A plain float: what older checkpoints hold.
  if schedule == "iwae":
    schedule, decay_rate = "piecewise", 10.0 ** (-1.0 / 7.0)
    boundaries = iwae_boundaries(steps_per_epoch)
  return WarmupSchedule(
      schedule, base_rate, warmup_steps,
      decay_steps=(decay_steps or steps_per_epoch if schedule == "exponential"
                   else total_steps - warmup_steps),
      decay_rate=decay_rate, min_fraction=min_fraction,
      boundaries=boundaries or (), scale=scale)


def adam_epsilon(schedule: str) -> float:
  """Adam's epsilon: the IWAE paper's 1e-4 comes with its schedule; Keras's
  default 1e-7 otherwise."""
  return 1e-4 if schedule == "iwae" else 1e-7


def make_optimizer(name: str, learning_rate, epsilon: float = 1e-7,
                   loss_scaling: bool = False, beta_1: float = 0.9,
                   beta_2: float = 0.999, weight_decay: float = 0.0
                   ) -> keras.optimizers.Optimizer:
  """`adam`, `adamw` or `sgd` at `learning_rate` (a float or a schedule),
  wrapped in a dynamic `LossScaleOptimizer` for float16 (create it inside
  the strategy's scope).

  Raises:
    ValueError: For an unknown optimizer name.
  """
  if name == "adam":
    optimizer = keras.optimizers.Adam(learning_rate, beta_1=beta_1,
                                      beta_2=beta_2, epsilon=epsilon)
  elif name == "adamw":
    optimizer = keras.optimizers.AdamW(learning_rate,
                                       weight_decay=weight_decay,
                                       beta_1=beta_1, beta_2=beta_2,
                                       epsilon=epsilon)
  elif name == "sgd":
    optimizer = keras.optimizers.SGD(learning_rate)
  else:
    raise ValueError(f"unknown optimizer {name!r}")
  return (keras.optimizers.LossScaleOptimizer(optimizer) if loss_scaling
          else optimizer)


def reapply_learning_rate(optimizer: keras.optimizers.Optimizer,
                          learning_rate) -> None:
  """Sets a constant learning rate again after a checkpoint restore.

  Keras saves a constant learning rate as an optimizer variable, so a
  restore would silently bring back the old run's value; a resumed run
  uses the rate it was started with now. (A schedule is a function of the
  restored step count and needs nothing.)
  """
  if isinstance(learning_rate, (int, float)):
    optimizer.learning_rate = float(learning_rate)
