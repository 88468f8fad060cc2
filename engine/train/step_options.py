"""How each training step is taken: `StepOptions`, what a `Trainer` is
given besides its model, objective, optimizer, strategy and batch size.

The fields carry the names of the settings they come from (`--nan_policy`,
`--ema_decay`, ...; `engine.run.parts.step_options` reads them off a run's
config), so a setting is found by one name from the flag to the step.
"""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """What a training step does besides its optimizer update; the defaults
  are a plain step (no warm-up, guard stops at the first non-finite step,
  no clipping or skipping, no moving average, XLA chosen by the model).

  Attributes:
    kl_warmup_steps: The KL weight: ramped from 0 to beta over these steps
      (0: beta from the first step).
    jit_compile: Compilation: XLA for the whole step on one device (and
      there, fed a `step_batches.StepBatches`, many steps per XLA call);
      forward and backward only under tf.distribute, where the optimizer
      update is a cross-replica operation XLA cannot hold. None: see
      `compilation.xla_by_default`.
    nan_policy: The step guard's answer to a non-finite step: `stop`,
      `skip` or `recover` (see `step_guard`; `recover` stops the loop as
      `stop` does, for `recovery`).
    max_skipped_steps: The step guard's patience: skipped steps in a row
      that end the loop (with `skip`, or updates whose norm is over
      `skip_grad_norm`).
    clip_grad_norm: Scale each update down to this global norm (None:
      never; see `gradient_norms.GradientNorms`).
    skip_grad_norm: Skip an update whose global norm is larger (None: none
      is too large; see `gradient_norms.GradientNorms`).
    ema_decay: The moving average of the weights: its decay (0: no
      average; see `weight_average.WeightAverage`).
    ema_dynamic_decay: The moving average's decay at step t is
      `min(ema_decay, (1 + t) / (10 + t))`.
  """

  kl_warmup_steps: int = 0
  jit_compile: Optional[bool] = None
  nan_policy: str = "stop"
  max_skipped_steps: int = 10
  clip_grad_norm: Optional[float] = None
  skip_grad_norm: Optional[float] = None
  ema_decay: float = 0.0
  ema_dynamic_decay: bool = True
