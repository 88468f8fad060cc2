"""Every setting is declared once; flags, config.json, the flagfile and the
tools' flags are derived from the declaration."""

import dataclasses
import json

import pytest

from absl import flags as absl_flags

import flags
from engine import config as config_lib


def _fresh_flags():
  values = absl_flags.FlagValues()
  flags.define(values)
  return values


def test_every_config_field_is_declared_with_help_and_has_one_flag():
  values = _fresh_flags()
  declared = config_lib.all_settings()
  for section, cls in config_lib.SECTIONS.items():
    fields = {f.name for f in dataclasses.fields(cls)}
    assert fields == {s.field for s in declared if s.section == section}
  for setting in declared:
    assert setting.help and len(setting.help) > 10, setting.field
    assert setting.help[:40] in values[setting.flag].help
  assert len({s.flag for s in declared}) == len(declared)


def test_a_non_default_value_of_every_setting_survives_flags_json_flagfile(
    tmp_path):
  """Change every setting at once and go around: flagfile -> flags ->
  config -> config.json -> config: nothing is lost or renamed."""
  config = flags.to_config(_parse_into(_fresh_flags(), [
      "--dataset=fashion_mnist", f"--data_dir={tmp_path}", "--binarize=static",
      "--noise_factor=0.3", "--max_train_examples=100",
      "--download_timeout=5", f"--tfds_data_dir={tmp_path}/tfds",
      "--image_size=32,30", "--channels=3",
      "--test_fraction=0.2", "--model=mlp", "--latent_dim=7",
      "--reconstruction_loss=gaussian", "--gaussian_stddev=0.2", "--beta=2",
      "--iw_samples=3", "--kl_warmup_steps=5",
      "--free_bits=0.1", "--conditional", f"--model_dir={tmp_path}/m",
      "--batch_size=32",
      "--epochs=3", "--train_steps=40", "--steps_per_loop=7",
      "--learning_rate=0.01", "--lr_schedule=piecewise",
      "--lr_boundaries=5,9", "--lr_decay_rate=0.3", "--warmup_steps=3",
      "--optimizer=adamw", "--weight_decay=0.01", "--adam_beta_1=0.8",
      "--adam_beta_2=0.99", "--clip_grad_norm=5", "--skip_grad_norm=50",
      "--keep_best=nll",
      "--seed=9", "--eval_every=11", "--checkpoint_every=13",
      "--log_every=17", "--keep_checkpoints=4", f"--export_dir={tmp_path}/e",
      f"--init_from={tmp_path}/source",
      "--mixed_precision=mixed_bfloat16", "--jit_compile", "--nofigures",
      "--sample_quality",
      "--eval_nll_samples=50", "--nan_policy=skip", "--max_skipped_steps=4",
      "--ema_decay=0.99", "--noema_dynamic_decay", "--recover_lr_factor=0.3",
      "--max_recoveries=5",
      "--allow_slow", "--profile_steps=2,5",
      "--strategy=mirrored", "--cpu_devices=2", "--num_gpus=1",
      "--collective_timeout=9", "--peer_wait_timeout=19", "--tpu=grpc://x"]))
  defaults = config_lib.RunConfig()
  # --objective=iwae excludes --kl_warmup_steps and --free_bits, and each
  # schedule has its own settings (cross checks): test_definitions and the
  # round trip below take those.
  for setting in config_lib.all_settings():
    if setting.field in ("objective", "lr_min_fraction", "lr_decay_steps"):
      continue
    ours = getattr(getattr(config, setting.section), setting.field)
    theirs = getattr(getattr(defaults, setting.section), setting.field)
    assert ours != theirs, f"--{setting.flag} did not reach the config"
  path = tmp_path / "flags.txt"
  path.write_text(config.to_flagfile())
  again = flags.to_config(_parse_into(_fresh_flags(), [f"--flagfile={path}"]))
  assert again == config
  assert config_lib.RunConfig.from_dict(
      json.loads(config.to_json())) == config


@pytest.mark.parametrize("schedule_flags", [
    ["--lr_schedule=cosine", "--lr_min_fraction=0.1"],
    ["--lr_schedule=exponential", "--lr_decay_steps=7"],
])
def test_each_schedules_settings_survive_flags_json_flagfile(tmp_path,
                                                             schedule_flags):
  config = flags.to_config(_parse_into(_fresh_flags(), schedule_flags))
  assert config.train.lr_schedule == schedule_flags[0].split("=")[1]
  path = tmp_path / "flags.txt"
  path.write_text(config.to_flagfile())
  again = flags.to_config(_parse_into(_fresh_flags(), [f"--flagfile={path}"]))
  assert again == config == config_lib.RunConfig.from_dict(
      json.loads(config.to_json()))


def _parse_into(values, args):
  values(["prog", *args])
  return values


def test_tool_override_flags_come_from_the_same_declarations():
  values = absl_flags.FlagValues()
  flags.definitions.define_overrides(("binarize", "noise_factor"), values)
  declared = {s.field: s for s in config_lib.all_settings()}
  assert values["binarize"].default is None
  # A choice is a string flag that lists its choices and refuses others
  # with the setting's own message.
  assert values["binarize"].help.endswith(
      f"One of: {', '.join(declared['binarize'].choices)}.")
  with pytest.raises(absl_flags.IllegalFlagValueError,
                     match="--binarize=sometimes: must be one of"):
    _parse_into(values, ["--binarize=sometimes"])
  assert declared["noise_factor"].help in values["noise_factor"].help
  assert config_lib.flag_name("download_timeout_s") == "download_timeout"
  assert config_lib.flag_name("name") == "model"


def test_the_default_model_dir_is_per_model_and_data_under_runs(
    tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  runs = tmp_path / "runs"
  data = tmp_path / "my photos"
  data.mkdir()

  def model_dir(**values):
    return config_lib.from_settings(**values).train.model_dir

  assert model_dir(model="conv", data_dir=str(data)) == str(
      runs / "conv_my_photos")
  assert model_dir(model="conv", data_dir=f"{data}/") == str(
      runs / "conv_my_photos")
  assert model_dir(model="dense", dataset="fashion_mnist") == str(
      runs / "dense_fashion_mnist")
  assert model_dir(model="dense", dataset="cifar10/3.0.2") == str(
      runs / "dense_cifar10_3.0.2")
  # Resume-safe settings keep the directory; the others get their own.
  plain = model_dir(model="dense")
  assert plain == model_dir(model="dense", train_steps=7, log_every=3,
                            eval_nll_samples=10)
  wider = model_dir(model="dense", latent_dim=5)
  iwae = model_dir(model="dense", objective="iwae", iw_samples=5)
  assert len({plain, wider, iwae}) == 3
  assert wider.startswith(str(runs / "dense_mnist-"))
  assert wider == model_dir(model="dense", latent_dim=5, train_steps=9)
  # The model's own defaults are not a difference.
  spec_latent = config_lib.from_settings(model="dense").model.latent_dim
  assert model_dir(model="dense", latent_dim=spec_latent) == plain
  given = config_lib.from_settings(model="dense", model_dir="gs://b/run")
  assert given.train.model_dir == "gs://b/run"
  # The resolved directory is what config.json keeps.
  config = config_lib.from_settings(model="mlp")
  assert config_lib.RunConfig.from_dict(
      json.loads(config.to_json())).train.model_dir == str(runs / "mlp_mnist")
  with pytest.raises(config_lib.ConfigError, match="multi-worker job"):
    config_lib.from_settings(model="dense", strategy="multi_worker_mirrored")
