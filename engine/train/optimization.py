"""The optimizer and its learning-rate schedule (`--optimizer`,
`--lr_schedule`)."""

from __future__ import annotations

import keras

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


def learning_rate(schedule: str, base_rate: float, steps_per_epoch: int):
  """The optimizer's learning rate: a float, or a Keras schedule on its steps.

  Args:
    schedule: `constant` or `iwae`.
    base_rate: The rate of the first stage (`--learning_rate`).
    steps_per_epoch: Optimizer steps per pass over the training set.

  Raises:
    ValueError: For an unknown schedule name.
  """
  if schedule == "constant":
    return base_rate
  if schedule == "iwae":
    # Keras's boundaries are inclusive: step <= boundary keeps the old rate.
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [step - 1 for step in iwae_boundaries(steps_per_epoch)],
        [base_rate * 10.0 ** (-stage / 7.0) for stage in range(IWAE_STAGES)])
  raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def adam_epsilon(schedule: str) -> float:
  """Adam's epsilon: the IWAE paper's 1e-4 comes with its schedule; Keras's
  default 1e-7 otherwise."""
  return 1e-4 if schedule == "iwae" else 1e-7


def make_optimizer(name: str, learning_rate, epsilon: float = 1e-7,
                   loss_scaling: bool = False) -> keras.optimizers.Optimizer:
  """`adam` or `sgd` at `learning_rate` (a float or a schedule), wrapped in
  a dynamic `LossScaleOptimizer` for float16 (create it inside the
  strategy's scope).

  Raises:
    ValueError: For an unknown optimizer name.
  """
  if name == "adam":
    optimizer = keras.optimizers.Adam(learning_rate, epsilon=epsilon)
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
