"""The settings `vae-engine evaluate` uses: the run's saved config, with
the command line's data and evaluation flags over it (model flags must
agree), and K = 5000 unless `--eval_nll_samples` is given."""

from __future__ import annotations

import dataclasses

import flags
from engine import config as config_lib
from engine.errors import UserError, quoted
from engine.io import files, run_dir

PAPER_K = 5000
# Run settings a command line may change for evaluation.
_EVAL_OVERRIDES = {
    "data": ("dataset", "data_dir", "binarize", "noise_factor",
             "download_timeout_s"),
    "train": ("seed", "batch_size", "eval_nll_samples", "mixed_precision",
              "sample_quality", "jit_compile"),
    "distribution": ("strategy", "cpu_devices", "num_gpus", "tpu"),
}
# Model settings that must agree with the run's (or are taken from it).
_MODEL_FLAGS = {"model": "name", "latent_dim": "latent_dim",
                "reconstruction_loss": "reconstruction_loss",
                "gaussian_stddev": "gaussian_stddev",
                "conditional": "conditional"}


def resolve(fv):
  """The run's saved config with the command line's explicit overrides.

  Raises:
    UserError: If a model flag contradicts the run's config.
  """
  config = flags.to_config(fv)
  if fv.saved_model and fv["jit_compile"].present and fv.jit_compile:
    raise UserError("--jit_compile: an export's input checks do not compile "
                    "with XLA; drop it, or evaluate the run's --model_dir")
  if not fv.saved_model and fv.model_dir is None:
    fv.model_dir = config.train.model_dir  # Set: where these flags train.
    if not files.gfile.exists(files.join(fv.model_dir, "config.json")):
      raise UserError(f"--model_dir: not given, and {quoted(fv.model_dir)} "
                      "(where training with these flags writes) holds no "
                      "run; pass the run's --model_dir, or --saved_model")
  if fv["model_dir"].present or not fv.saved_model:
    saved = run_dir.read_run_config(fv.model_dir)
    for flag, field in _MODEL_FLAGS.items():
      ours, theirs = getattr(config.model, field), getattr(saved.model, field)
      if fv[flag].present and ours != theirs:
        raise UserError(f"--{flag}={ours}: the run in {fv.model_dir} was "
                        f"trained with {theirs}; drop the flag")
    sections = {}
    for section, names in _EVAL_OVERRIDES.items():
      ours, theirs = getattr(config, section), getattr(saved, section)
      sections[section] = dataclasses.replace(theirs, **{
          name: getattr(ours, name) for name in names
          if fv[config_lib.flag_name(name)].present})
    config = dataclasses.replace(saved, **sections)
  if not fv["eval_nll_samples"].present:
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, eval_nll_samples=PAPER_K))
  return config
