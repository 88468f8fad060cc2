"""The contract checker refuses every way a builder can break the contract,
with one line naming the model and what is wrong, and passes the engine's
own models in every form they are built in."""

import keras
import numpy as np
import pytest

import models
from models import base
from models import contract
from models import plugins


@pytest.mark.e2e
@pytest.mark.parametrize("name", models.names())
def test_the_engines_models_keep_the_contract(name):
  spec = models.get(name)
  labelled = {} if name == "iwae_mlp2" else {"num_classes": 3}
  for kwargs in ({}, {**labelled, "learned_scale": True}):
    vae = spec.create((28, 28, 1), spec.default_latent_dim, **kwargs)
    assert vae.name == name
    contract.check_behaviour(vae)


def _decoder(image_shape, latent_dim):
  return base.dense_decoder(image_shape, latent_dim, [8])


def _encoder(image_shape, latent_dim, transform=None, z=None):
  images, epsilon = base.encoder_inputs(image_shape, latent_dim)
  h = keras.layers.Flatten()(transform(images) if transform else images)
  z_mean = keras.layers.Dense(latent_dim)(h)
  z_log_var = keras.layers.Dense(latent_dim)(h)
  z_value = (z(z_mean, z_log_var, epsilon) if z else
             base.Reparameterize()([z_mean, z_log_var, epsilon]))
  return keras.Model([images, epsilon], [z_mean, z_log_var, z_value])


def good(image_shape, latent_dim=2):
  """A model that keeps the contract."""
  return base.VariationalAutoencoder("good", _encoder(image_shape, latent_dim),
                                     _decoder(image_shape, latent_dim))


def dropout(image_shape, latent_dim=2):
  return base.VariationalAutoencoder(
      "x", _encoder(image_shape, latent_dim, keras.layers.Dropout(0.3)),
      _decoder(image_shape, latent_dim))


def gaussian_noise(image_shape, latent_dim=2):
  return base.VariationalAutoencoder(
      "x", _encoder(image_shape, latent_dim, keras.layers.GaussianNoise(0.1)),
      _decoder(image_shape, latent_dim))


def ignores_noise(image_shape, latent_dim=2):
  return base.VariationalAutoencoder(
      "x", _encoder(image_shape, latent_dim, z=lambda m, v, e: m),
      _decoder(image_shape, latent_dim))


def wrong_z(image_shape, latent_dim=2):
  return base.VariationalAutoencoder(
      "x", _encoder(image_shape, latent_dim,
                    z=lambda m, v, e: keras.layers.Add()([m, e])),
      _decoder(image_shape, latent_dim))


def wrong_latent(image_shape, latent_dim=2):
  return good(image_shape, latent_dim + 1)


def wrong_image(image_shape, latent_dim=2):
  vae = good(image_shape, latent_dim)
  return base.VariationalAutoencoder(
      "x", vae.encoder, _decoder((image_shape[0] // 2, *image_shape[1:]),
                                 latent_dim))


def two_outputs(image_shape, latent_dim=2):
  vae = good(image_shape, latent_dim)
  encoder = keras.Model(vae.encoder.inputs, vae.encoder.outputs[:2])
  return base.VariationalAutoencoder("x", encoder, vae.decoder)


def integer_logits(image_shape, latent_dim=2):
  vae = good(image_shape, latent_dim)
  z = keras.Input(shape=(latent_dim,))
  logits = keras.layers.Lambda(lambda t: keras.ops.cast(t, "int32"))(
      vae.decoder(z))
  return base.VariationalAutoencoder("x", vae.encoder, keras.Model(z, logits))


def infinite(image_shape, latent_dim=2):
  vae = good(image_shape, latent_dim)
  z = keras.Input(shape=(latent_dim,))
  logits = keras.layers.Lambda(lambda t: t / 0.0)(vae.decoder(z))
  return base.VariationalAutoencoder("x", vae.encoder, keras.Model(z, logits))


def not_a_vae(image_shape, latent_dim=2):
  return good(image_shape, latent_dim).encoder


def raises(image_shape, latent_dim=2):
  return {}["missing"]


def no_weights(image_shape, latent_dim=2):
  images, epsilon = base.encoder_inputs(image_shape, latent_dim)
  flat = keras.layers.Flatten()(images)
  head = keras.layers.Lambda(lambda t: t[:, :latent_dim])(flat)
  encoder = keras.Model([images, epsilon], [
      head, head, base.Reparameterize()([head, head, epsilon])])
  z = keras.Input(shape=(latent_dim,))
  logits = keras.layers.Lambda(lambda t: keras.ops.zeros(
      (keras.ops.shape(t)[0], *image_shape)) + keras.ops.sum(t))(z)
  return base.VariationalAutoencoder("x", encoder, keras.Model(z, logits))


@pytest.mark.parametrize("builder,problem", [
    (dropout, "it draws its own random numbers"),
    (gaussian_noise, "it draws its own random numbers"),
    (ignores_noise, "z is not z_mean + exp(z_log_var / 2) * epsilon"),
    (wrong_z, "z is not z_mean + exp(z_log_var / 2) * epsilon"),
    (wrong_latent, "its encoder takes inputs of shapes [(None, 28, 28, 1), "
     "(None, 3)], not [images (None, 28, 28, 1), epsilon (None, 2)]"),
    (wrong_image, "its decoder returns shapes [(None, 14, 28, 1)], not "
     "[logits (None, 28, 28, 1)]"),
    (two_outputs, "its encoder returns shapes [(None, 2), (None, 2)], not "
     "[z_mean, z_log_var, z] of (None, 2) each"),
    (integer_logits, "non-floating logits"),
    (infinite, "its decoder returns non-finite logits"),
    (not_a_vae, "the builder returned a Functional, not a "
     "models.VariationalAutoencoder"),
    (raises, "the builder raised KeyError: 'missing'; fix the builder"),
    (no_weights, "it has no trainable weights"),
])
def test_a_builder_that_breaks_the_contract_is_named_with_what_is_wrong(
    builder, problem):
  spec = plugins.spec_of(builder, f"mine:{builder.__name__}", "mine")
  with pytest.raises(contract.ContractError) as raised:
    contract.check_behaviour(spec.create((28, 28, 1), 2))
  message = str(raised.value)
  assert message.startswith(f"--model=mine:{builder.__name__}: "), message
  assert problem in message and "\n" not in message, message


def test_a_spec_is_read_from_the_builder_itself():
  spec = plugins.spec_of(good, "pkg.mod:good", "pkg.mod:good")
  assert (spec.name, spec.default_latent_dim, spec.description,
          spec.parameter_counts, spec.initializes_from_data) == (
              "pkg.mod:good", 2, "A model that keeps the contract.", None,
              False)
  contract.check_behaviour(spec.create((8, 8, 1), 4))

  def from_data(image_shape, latent_dim, pixel_mean=None):
    vae = good(image_shape, latent_dim)
    vae.decoder.layers[-2].bias.assign(np.asarray(pixel_mean).reshape(-1))
    return vae

  spec = plugins.spec_of(from_data, "m:f", "m:f")
  assert spec.initializes_from_data and spec.default_latent_dim is None
  mean = np.full((8, 8, 1), 0.25, np.float32)
  vae = spec.create((8, 8, 1), 2, pixel_mean=mean)
  np.testing.assert_array_equal(vae.decoder.layers[-2].bias.numpy(), 0.25)


@pytest.mark.parametrize("target,problem", [
    (3, "is not a builder (it is a int); name a function"),
    (lambda shape: None, "does not take (image_shape, latent_dim)"),
    (lambda shape, latent_dim=0: None, "latent_dim default is 0"),
])
def test_what_is_not_a_builder_is_refused_by_name(target, problem):
  with pytest.raises(plugins.PluginError, match=r"^--model=m:f: m:f"):
    plugins.spec_of(target, "m:f", "m:f")
  with pytest.raises(plugins.PluginError) as raised:
    plugins.spec_of(target, "m:f", "m:f")
  assert problem in str(raised.value)


def test_a_module_that_exits_at_import_is_refused_not_obeyed(tmp_path,
                                                            monkeypatch):
  """A plug-in calling sys.exit at import (as scripts do) is a builder that
  cannot be loaded, not the end of the run."""
  (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(3)\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  with pytest.raises(plugins.PluginError,
                     match=r"^--model=exits_at_import:build: importing "
                     r"exits_at_import failed: SystemExit"):
    plugins.load_reference("exits_at_import:build")
