"""A run's whole configuration: its four sections, the rules between
settings, and the files it is saved as (`config.json`, a flagfile)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from engine.config import settings
from engine.config.sections import (DataConfig, DistributionConfig,
                                    ModelConfig, TrainConfig,
                                    _resolve_model_defaults)


# Rules between settings: (settings, predicate on their values, message).
CROSS_CHECKS = (
    (("objective", "kl_warmup_steps", "free_bits"),
     lambda v: v["objective"] == "elbo" or not (v["kl_warmup_steps"]
                                                or v["free_bits"]),
     "--kl_warmup_steps and --free_bits shape the ELBO's KL term; they cannot "
     "be used with --objective=iwae"),
    (("lr_schedule", "lr_boundaries"),
     lambda v: (v["lr_schedule"] == "piecewise") == bool(v["lr_boundaries"]),
     "--lr_schedule=piecewise takes --lr_boundaries=S1,S2,... (the steps "
     "where the rate drops); no other schedule does"),
    (("lr_schedule", "lr_decay_steps"),
     lambda v: v["lr_schedule"] == "exponential" or not v["lr_decay_steps"],
     "--lr_decay_steps is the period of --lr_schedule=exponential"),
    (("lr_schedule", "lr_min_fraction"),
     lambda v: v["lr_schedule"] == "cosine" or not v["lr_min_fraction"],
     "--lr_min_fraction is where --lr_schedule=cosine ends"),
    (("keep_best", "eval_nll_samples"),
     lambda v: v["keep_best"] != "nll" or v["eval_nll_samples"],
     "--keep_best=nll needs --eval_nll_samples=K (the NLL is estimated only "
     "then)"),
    (("optimizer", "weight_decay"),
     lambda v: v["optimizer"] == "adamw" or not v["weight_decay"],
     "--weight_decay needs --optimizer=adamw (decoupled decay; Adam's L2 "
     "penalty is not offered)"),
)
SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
            "distribution": DistributionConfig}


def all_settings() -> list[settings.Setting]:
  """Every declared setting, section by section."""
  return [s for name, cls in SECTIONS.items()
          for s in settings.declared(name, cls)]


def flag_name(field: str) -> str:
  """The flag of a config field (most have the field's own name)."""
  return next((s.flag for s in all_settings() if s.field == field), field)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything one run needs."""

  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  distribution: DistributionConfig = dataclasses.field(
      default_factory=DistributionConfig)

  def __post_init__(self):
    # A config made in code gets the model's defaults, as the command line
    # does (`RunConfig(model=ModelConfig(name="denoising"))` denoises).
    data = dataclasses.replace(self.data)
    _resolve_model_defaults(data, "data", self.model.name)
    object.__setattr__(self, "data", data)

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
    for declared in all_settings():
      value = getattr(getattr(self, declared.section), declared.field)
      if value is None:
        continue
      if isinstance(value, bool):
        lines.append(f"--{declared.flag}" if value else f"--no{declared.flag}")
      elif isinstance(value, tuple):
        lines.append(f"--{declared.flag}={','.join(str(v) for v in value)}")
      else:
        lines.append(f"--{declared.flag}={value}")
    return "\n".join(lines) + "\n"
