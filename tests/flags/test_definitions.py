"""Flags -> frozen config: defaults, model defaults, flagfile round trip."""

import dataclasses

from absl import flags as absl_flags
import pytest

import flags
from engine.config import RunConfig


def _parse(*args):
  values = absl_flags.FlagValues()
  flags.define(values)
  values(["prog", *args])
  return values


def test_defaults_and_model_defaults():
  config = flags.to_config(_parse())
  assert config.model.name == "conv" and config.model.latent_dim == 2
  assert config.data.noise_factor == 0.0
  denoising = flags.to_config(_parse("--model=denoising"))
  assert denoising.model.latent_dim == 40
  assert denoising.data.noise_factor == 0.2
  explicit = flags.to_config(_parse("--model=denoising", "--latent_dim=8",
                                    "--noise_factor=0"))
  assert explicit.model.latent_dim == 8 and explicit.data.noise_factor == 0.0


def test_config_is_frozen():
  config = flags.to_config(_parse())
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.train.batch_size = 3


def test_written_flagfile_reproduces_the_config(tmp_path):
  config = flags.to_config(_parse(
      "--model=mlp", "--batch_size=64", "--binarize=dynamic", "--beta=0.5",
      "--train_steps=77", "--nofigures", f"--data_dir={tmp_path}",
      "--export_dir=/tmp/x", "--max_train_examples=500",
      "--profile_steps=10,30"))
  assert config.train.profile_steps == (10, 30)
  path = tmp_path / "flags.txt"
  path.write_text(config.to_flagfile())
  assert flags.to_config(_parse(f"--flagfile={path}")) == config
  assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("flag", ["--batch_size=0", "--latent_dim=0",
                                  "--learning_rate=-1", "--beta=-0.1",
                                  "--noise_factor=-1", "--log_every=0",
                                  "--binarize=maybe",
                                  "--reconstruction_loss=l1",
                                  "--profile_steps=30,10",
                                  "--profile_steps=5", "--profile_steps=a,b",
                                  "--profile_steps=-1,4"])
def test_invalid_values_are_rejected_at_parse_time(flag):
  with pytest.raises(absl_flags.Error, match=flag.split("=")[0]):
    _parse(flag)


def test_iwae_paper_flags_round_trip(tmp_path):
  config = flags.to_config(_parse(
      "--model=iwae_mlp", "--objective=iwae", "--iw_samples=5",
      "--lr_schedule=iwae", "--eval_nll_samples=5000", "--nan_policy=skip",
      "--max_skipped_steps=3", "--allow_slow"))
  assert config.model.latent_dim == 50 and config.model.iw_samples == 5
  assert config.train.lr_schedule == "iwae"
  assert config.train.nan_policy == "skip" and config.train.allow_slow
  path = tmp_path / "flags.txt"
  path.write_text(config.to_flagfile())
  assert flags.to_config(_parse(f"--flagfile={path}")) == config


@pytest.mark.parametrize("args", [("--objective=iwae", "--kl_warmup_steps=10"),
                                  ("--objective=iwae", "--free_bits=0.5")])
def test_warmup_and_free_bits_do_not_mix_with_iwae(args):
  with pytest.raises(absl_flags.IllegalFlagValueError,
                     match="cannot be used with --objective=iwae"):
    _parse(*args)


def test_elbo_takes_warmup_and_free_bits():
  config = flags.to_config(_parse("--kl_warmup_steps=100", "--free_bits=0.25",
                                  "--iw_samples=4"))
  assert (config.model.kl_warmup_steps, config.model.free_bits,
          config.model.iw_samples) == (100, 0.25, 4)


def test_preset_is_a_flagfile_for_the_engine_and_a_value_for_a_tools_own():
  """`vae-engine --preset=iwae_vae` reads the preset's flags; a tool whose
  own --preset names a preset (`vae-engine preset_rate --preset=iwae_vae`)
  gets the name, not the preset's flags, which it does not define."""
  engine = absl_flags.FlagValues()
  flags.define(engine)
  flags.parse(["vae-engine", "--preset=iwae_vae"], engine)
  assert engine.model == "iwae_mlp" and engine.batch_size == 20
  tool = absl_flags.FlagValues()
  absl_flags.DEFINE_string("preset", "iwae_vae", "The preset to time.",
                           flag_values=tool)
  flags.parse(["vae-engine preset_rate", "--preset=iwae2_vae"], tool)
  assert tool.preset == "iwae2_vae"
