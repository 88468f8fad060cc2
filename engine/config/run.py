"""A run's whole configuration: its four sections, the rules between
settings, and the files it is saved as (`config.json`, a flagfile)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import posixpath
import re
from typing import Any

from engine.config import settings
from engine.config.sections import (DataConfig, DistributionConfig,
                                    ModelConfig, TrainConfig,
                                    _registry, _resolve_model_defaults)


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


def all_settings(with_help: bool = True) -> list[settings.Setting]:
  """Every declared setting, section by section (`with_help=False`: their
  help left empty, which spares listing the installed models)."""
  return [s for name, cls in SECTIONS.items()
          for s in settings.declared(name, cls, with_help)]


def flag_name(field: str) -> str:
  """The flag of a config field (most have the field's own name)."""
  return next((s.flag for s in all_settings(with_help=False)
               if s.field == field), field)


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
    if self.train.model_dir is None:
      if self.distribution.strategy == "multi_worker_mirrored":
        raise settings.ConfigError(
            "--model_dir: a multi-worker job needs it given (the default "
            "is under each worker's own current directory); pass the same "
            "--model_dir, on storage every worker reaches, to every worker")
      object.__setattr__(self, "train", dataclasses.replace(
          self.train, model_dir=default_model_dir(self)))
    values = {declared.flag: getattr(getattr(self, declared.section),
                                     declared.field)
              for declared in all_settings(with_help=False)}
    for names, predicate, message in CROSS_CHECKS:
      if not predicate({name: values[name] for name in names}):
        raise settings.ConfigError(message)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
    """The config `to_dict` gave (a saved `config.json`): checked as any
    config is, except that the files it names need not exist any more."""
    with settings.reading_saved_config():
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


def default_model_dir(config: RunConfig) -> str:
  """`<cwd>/runs/<model>_<data>[-<digest>]`: the run directory when none
  is given.

  Named by what decides whether two runs may share it (a run resumes from
  its directory and refuses other settings): the model, the data
  (`--data_dir`'s folder name, else the dataset's) and, when any setting a
  run must keep to resume differs from what `--model` alone gives (a
  preset's objective, another latent size), a digest of those settings. So
  the same command resumes, whatever resume-safe flags change, and another
  preset or latent size gets its own directory. Absolute, so the saved
  config names it from anywhere.
  """
  data, model = config.data, config.model
  source = (posixpath.basename(posixpath.normpath(data.data_dir))
            if data.data_dir else data.dataset)
  name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model.name}_{source}")
  name = name.strip("._") or "run"
  spec = None
  differing = []
  for declared in all_settings(with_help=False):
    if declared.resume_safe or declared.flag == "model":
      continue
    ours = getattr(getattr(config, declared.section), declared.field)
    default = declared.default
    if declared.model_default:
      spec = spec or _registry().get(model.name)
      default = settings.normalized(declared, declared.model_default(spec))
    if ours != default:
      differing.append(f"--{declared.flag}={ours!r}")
  if differing:
    digest = hashlib.sha256("\n".join(sorted(differing)).encode())
    name += "-" + digest.hexdigest()[:6]
  return os.path.abspath(os.path.join("runs", name))


def from_settings(**values) -> RunConfig:
  """A run's config from settings named as their flags are
  (`from_settings(model="dense", train_steps=200, model_dir="/tmp/m")`),
  every other setting at its default; checked as the flags are.

  A list setting takes a tuple or its flag's text (`image_size="32,32"`);
  a path setting is made absolute, as on the command line.

  Raises:
    ConfigError: For an unknown setting or a value the flag would refuse,
      with the flag's message.
  """
  by_flag = {declared.flag: declared for declared in all_settings(
      with_help=False)}
  sections = {name: {} for name in SECTIONS}
  for flag, value in values.items():
    declared = by_flag.get(flag)
    if declared is None:
      raise settings.ConfigError(
          f"--{flag}: no such setting; see vae-engine --helpfull for "
          "the settings a run takes")
    if declared.type is tuple and isinstance(value, str):
      parsed = declared.parse(value.split(","))
      if parsed is None:
        raise settings.ConfigError(
            f"--{flag}={value}: " + (declared.check[1] if declared.check
                                     else "not a valid list"))
      value = parsed
    if declared.absolute_path and isinstance(value, str) and value:
      value = os.path.abspath(value)
    sections[declared.section][declared.field] = value
  return RunConfig(**{name: SECTIONS[name](**fields)
                      for name, fields in sections.items()})
