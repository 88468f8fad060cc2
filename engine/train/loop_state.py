"""What one compiled training call hands back: `LoopOutputs`, with the step
guard's `GuardReport` (see `step_guard`). Plain data: actions read these,
never the trainer. (The loss terms are summed on the device in
`replica_sums.LossSums`.)"""

from __future__ import annotations

import dataclasses
from typing import Optional

# Why a step's update was skipped, in the order the guard checks.
NON_FINITE, GRADIENT_NORM = "non_finite", "gradient_norm"
CAUSES = (NON_FINITE, GRADIENT_NORM)

# What the non-finite check looks at, in this order.
CHECKED_TERMS = ("reconstruction", "kl", "gradients")


@dataclasses.dataclass(frozen=True)
class GuardReport:
  """What the step guard has seen since the process started.

  Attributes:
    stop_cause: The cause (`CAUSES`) that ended the loop at its last step,
      None if it did not.
    skipped: Steps whose update was skipped, by cause.
    first_bad_step: Global step (0-based) of the first non-finite step
      (-1: none).
    last_bad_step: Global step of the latest non-finite step (-1: none).
    bad_terms: The `CHECKED_TERMS` that were non-finite at the latest
      non-finite step.
    last_skipped_norm: The gradient norm of the latest update skipped for
      its norm (0: none).
  """

  stop_cause: Optional[str] = None
  skipped: dict = dataclasses.field(
      default_factory=lambda: dict.fromkeys(CAUSES, 0))
  first_bad_step: int = -1
  last_bad_step: int = -1
  bad_terms: tuple = ()
  last_skipped_norm: float = 0.0

  @property
  def stopped(self) -> bool:
    return self.stop_cause is not None


@dataclasses.dataclass(frozen=True)
class LoopOutputs:
  """What one compiled training call returns (`Trainer.train`).

  Attributes:
    step: The global step after the call.
    steps: Steps the call ran (fewer than asked if the guard stopped it).
    sums: Loss terms (`elbo.TERMS`) summed over the examples trained.
    examples: Examples trained (a skipped step's are not counted).
    seconds: Wall time of the call, the span `examples` took.
    guard: What the step guard saw: why the loop stopped, if it did, and
      the steps skipped so far by cause.
    grad_norm: The mean global gradient norm of the call's applied steps
      (None: not measured; see `gradient_norms`).
  """

  step: int
  steps: int
  sums: dict
  examples: float
  seconds: float
  guard: GuardReport = GuardReport()
  grad_norm: Optional[float] = None

  @property
  def stopped(self) -> bool:
    """The guard ended the loop (`guard.stop_cause` says why)."""
    return self.guard.stopped
