"""vae-engine's Python API: the command line's equal.

    import engine

    config = engine.configure(model="dense", train_steps=200,
                              model_dir="/tmp/runs/dense")
    # or, exactly as `vae-engine` reads a command line (presets, flagfiles):
    config = engine.configure_from_flags(["--preset=iwae_vae",
                                          "--model_dir=M"])
    result = engine.fit(config)          # an `engine.RunResult`
    print(result.test_metrics["elbo"], result.export_path)

A config can also be built section by section (`engine.RunConfig(
train=engine.TrainConfig(batch_size=64))`). Every way checks each value as
its flag does and raises `engine.UserError` (a `ConfigError` for a setting)
with the line `vae-engine` would print: `--batch_size=-3: must be a
positive number`. Names load on first use, so `import engine` stays cheap.
(They are not `engine.config` and `engine.train`: those are the packages
they come from.)
"""

from __future__ import annotations

import importlib

# Public name -> (module, attribute).
_EXPORTS = {
    "configure": ("engine.config", "from_settings"),
    "configure_from_flags": ("flags.definitions", "config_from_argv"),
    "fit": ("engine.run.runner", "run"),
    "RunConfig": ("engine.config", "RunConfig"),
    "DataConfig": ("engine.config", "DataConfig"),
    "ModelConfig": ("engine.config", "ModelConfig"),
    "TrainConfig": ("engine.config", "TrainConfig"),
    "DistributionConfig": ("engine.config", "DistributionConfig"),
    "RunResult": ("engine.run.finish", "RunResult"),
    "ConfigError": ("engine.config.settings", "ConfigError"),
    "UserError": ("engine.errors", "UserError"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name not in _EXPORTS:
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
  module, attribute = _EXPORTS[name]
  value = getattr(importlib.import_module(module), attribute)
  globals()[name] = value
  return value


def __dir__():
  return __all__
