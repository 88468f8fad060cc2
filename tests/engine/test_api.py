"""The Python API (`import engine`) is the command line's equal: the same
checks, the same one-line messages, and a run that returns its result."""

import io
import json
import os
import shutil
import textwrap

import numpy as np
import pytest

import engine
from engine.config import RunConfig
from tests.helpers import run_in_process

# (keyword settings, the flags they stand for): each must be refused in
# Python with the very line the CLI prints after "error: ".
BAD_SETTINGS = [
    (dict(batch_size=-3), ["--batch_size=-3"]),
    (dict(batch_size=12.5), ["--batch_size=12.5"]),
    (dict(learning_rate=float("nan")), ["--learning_rate=nan"]),
    (dict(model="resnet"), ["--model=resnet"]),
    (dict(image_size="a,b"), ["--image_size=a,b"]),
    (dict(test_fraction=1.5), ["--test_fraction=1.5"]),
    (dict(objective="iwae", free_bits=0.5),
     ["--objective=iwae", "--free_bits=0.5"]),
    (dict(optimizer="lion"), ["--optimizer=lion"]),
    (dict(lr_schedule="piecewise"), ["--lr_schedule=piecewise"]),
]


def _cli_line(flags, model_dir):
  result = run_in_process(*flags, f"--model_dir={model_dir}",
                          "--train_steps=1")
  assert result.returncode == 2, result.stderr
  errors = [line for line in result.stderr.splitlines()
            if line.startswith("error: ")]
  assert len(errors) == 1, result.stderr
  return errors[0][len("error: "):]


@pytest.mark.e2e
@pytest.mark.parametrize("values,flags", BAD_SETTINGS,
                         ids=[" ".join(f) for _, f in BAD_SETTINGS])
def test_a_bad_value_gives_the_clis_line_from_every_way_in(values, flags,
                                                           tmp_path):
  expected = _cli_line(flags, tmp_path / "cli")
  with pytest.raises(engine.ConfigError) as keywords:
    engine.configure(**values)
  with pytest.raises(engine.UserError) as from_flags:
    engine.configure_from_flags(flags)
  assert str(keywords.value) == expected
  assert str(from_flags.value) == expected
  # A `ConfigError` is also a `ValueError`, as dataclass users expect.
  assert isinstance(keywords.value, ValueError)


def test_sections_made_by_hand_are_checked_as_their_flags_are():
  with pytest.raises(engine.ConfigError,
                     match=r"^--batch_size=-3: must be a positive number$"):
    engine.TrainConfig(batch_size=-3)
  with pytest.raises(engine.ConfigError, match=r"^--channels=2: "):
    engine.DataConfig(channels=2)
  with pytest.raises(engine.ConfigError, match=r"^--latent_dim=0: "):
    engine.ModelConfig(name="dense", latent_dim=0)
  with pytest.raises(engine.ConfigError, match=r"^--lr_schedule=piecewise"):
    engine.RunConfig(train=engine.TrainConfig(lr_schedule="piecewise"))
  with pytest.raises(engine.ConfigError, match=r"^--wrong: no such setting"):
    engine.configure(wrong=1)


def test_keywords_and_flags_make_the_same_config(tmp_path):
  model_dir = str(tmp_path / "m")
  by_keywords = engine.configure(model="conv", batch_size=32,
                                 image_size="28,28", model_dir=model_dir)
  by_flags = engine.configure_from_flags(
      ["--model=conv", "--batch_size=32", "--image_size=28,28",
       f"--model_dir={model_dir}"])
  assert by_keywords == by_flags
  # The model's own defaults apply, as on the command line.
  assert by_keywords.model.latent_dim == by_flags.model.latent_dim
  assert by_keywords.data.image_size == (28, 28)


@pytest.mark.e2e
def test_fit_trains_and_returns_the_runs_result(small_mnist_dir, tmp_path):
  model_dir = str(tmp_path / "run")
  config = engine.configure(model="dense", data_dir=small_mnist_dir,
                            model_dir=model_dir, train_steps=30,
                            steps_per_loop=10, batch_size=64,
                            checkpoint_every=0, eval_every=0, figures=False,
                            export_dir=os.path.join(model_dir, "export"))
  result = engine.fit(config, stream=io.StringIO())
  assert isinstance(result, engine.RunResult)
  assert result.final_step == 30
  assert np.isfinite(result.test_metrics["elbo"])
  assert result.export_path and os.path.isdir(result.export_path)
  with open(os.path.join(model_dir, "result.json"), encoding="utf-8") as f:
    assert json.load(f)["final_step"] == 30


def test_a_saved_config_still_loads_when_its_data_dir_is_gone(
    small_mnist_dir, tmp_path):
  """`config.json` says where the data was; reading it back (to evaluate,
  plot or export a run) must not need that directory any more."""
  data_dir = str(tmp_path / "data")
  shutil.copytree(small_mnist_dir, data_dir)
  config = engine.configure(model="dense", data_dir=data_dir,
                            model_dir=str(tmp_path / "m"))
  saved = config.to_dict()
  shutil.rmtree(data_dir)
  with pytest.raises(engine.ConfigError, match=r"^--data_dir="):
    engine.configure(model="dense", data_dir=data_dir)
  assert RunConfig.from_dict(json.loads(json.dumps(saved))) == config


def test_a_flag_given_twice_raises_instead_of_exiting():
  with pytest.raises(engine.UserError, match=r"^--model_dir: given twice"):
    engine.configure_from_flags(["--model_dir=/tmp/a", "--model_dir=/tmp/b"])


@pytest.mark.parametrize("values,message", [
    (dict(learning_rate=10 ** 400), "must be smaller than"),
    (dict(batch_size=[32]), "must be an integer, not a list"),
    (dict(batch_size="12"), "must be an integer, not a str"),
    (dict(learning_rate="0.1"), "must be a number, not a str"),
    (dict(image_size=0), "must be H or H,W"),
    (dict(profile_steps=5), "must be FIRST,LAST"),
])
def test_values_of_the_wrong_kind_are_refused_in_one_line(values, message):
  with pytest.raises(engine.ConfigError) as raised:
    engine.configure(**values)
  assert message in str(raised.value)
  assert str(raised.value).startswith(f"--{next(iter(values))}=")


def test_numbers_of_any_kind_become_the_configs_own(tmp_path):
  """numpy's integers and reals are taken as Python's (config.json can
  write them); one number stands for a list setting's one value."""
  config = engine.configure(batch_size=np.int64(32),
                            learning_rate=np.float32(0.5),
                            image_size=(np.int64(32), 32),
                            train_steps=np.uint16(7))
  assert type(config.train.batch_size) is int
  assert type(config.train.learning_rate) is float
  assert type(config.train.train_steps) is int
  assert config.data.image_size == (32, 32)
  assert all(type(side) is int for side in config.data.image_size)
  json.dumps(config.to_dict())
  assert engine.configure(image_size=32).data.image_size == (32, 32)


def test_a_builders_bad_defaults_are_the_builders_fault(tmp_path,
                                                        monkeypatch):
  (tmp_path / "bad_defaults.py").write_text(textwrap.dedent('''\
      from models import ModelSpec, registry

      def _build(image_shape, latent_dim):
        return registry.get("dense").build(image_shape, latent_dim)

      text_latent = ModelSpec("text_latent", _build, "8", "A str default.")
      negative_noise = ModelSpec("negative_noise", _build, 2, "Noise -1.",
                                 default_noise_factor=-1.0)
      '''))
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(engine.ConfigError,
                     match=r"^--model=bad_defaults:text_latent: its default "
                     r"latent_dim is refused \(--latent_dim=8: must be an "
                     r"integer, not a str\)"):
    engine.configure(model="bad_defaults:text_latent")
  with pytest.raises(engine.ConfigError,
                     match=r"^--model=bad_defaults:negative_noise: its default "
                     r"noise_factor is refused"):
    engine.configure(model="bad_defaults:negative_noise")
  # Given explicitly, the bad defaults are not used.
  assert engine.configure(model="bad_defaults:negative_noise",
                          noise_factor=0.0).data.noise_factor == 0.0
