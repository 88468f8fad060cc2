"""Every registered model: the seeds' parameter counts and the contract."""

import numpy as np
import pytest
import tensorflow as tf

import models
from models import registry

EXPECTED = {
    "dense": (234_372, 234_896),
    "lambda": (403_972, 403_728),
    "conv": (69_076, 65_089),
    "mlp": (566_660, 567_184),
    "denoising": (442_960, 423_184),
    # Burda et al.'s 784-200-200-50: 784*200+200 + 200*200+200 + 2*(200*50+50)
    # and its mirror image.
    "iwae_mlp": (217_300, 207_984),
    # Two stochastic layers: 784-100-100 -> z1 (100) -> 50-50 -> z2 (50), and
    # the generative path z2 -> 50-50 -> p(z1 | z2) -> 100-100 -> 784.
    "iwae_mlp2": (121_500, 114_684),
}


def test_registry_holds_the_five_seed_models_and_the_iwae_networks():
  assert models.names() == sorted(EXPECTED)


def test_the_flags_know_the_engines_models_without_the_registry():
  """`--model` is checked before TensorFlow loads: its list of the engine's
  own models is the registry's."""
  from engine.config import sections
  assert sorted(sections.ENGINE_MODELS) == models.names()


def test_iwae_mlp_is_tanh_and_starts_its_output_bias_at_the_data_mean():
  spec = models.get("iwae_mlp")
  assert spec.default_latent_dim == 50 and spec.initializes_from_data
  pixel_mean = np.linspace(0.0, 1.0, 784).reshape(28, 28, 1)
  vae = spec.create((28, 28, 1), 50, pixel_mean=pixel_mean)
  bias = vae.decoder.get_layer("logits").bias.numpy()
  clipped = np.clip(pixel_mean.reshape(-1), 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(bias, np.log(clipped / (1 - clipped)), rtol=1e-5)
  hidden = [layer for layer in vae.encoder.layers + vae.decoder.layers
            if layer.name.startswith(("encoder_", "decoder_"))]
  assert len(hidden) == 4
  assert all(layer.activation.__name__ == "tanh" and layer.units == 200
             for layer in hidden)
  # Without data (e.g. before restoring a checkpoint) the bias is zero, and
  # other models ignore pixel_mean.
  assert not spec.create((28, 28, 1), 50).decoder.get_layer(
      "logits").bias.numpy().any()
  assert models.get("dense").create((28, 28, 1), 2, pixel_mean=pixel_mean)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts_match_the_seeds(name):
  spec = models.get(name)
  vae = spec.build((28, 28, 1), spec.default_latent_dim)
  assert vae.count_params() == EXPECTED[name] == spec.parameter_counts


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_contract_shapes_and_determinism(name):
  spec = models.get(name)
  vae = spec.build((28, 28, 1), 3)
  images = tf.random.uniform([4, 28, 28, 1])
  epsilon = tf.random.normal([4, 3])
  z_mean, z_log_var, z = vae.encoder([images, epsilon])
  assert z_mean.shape == z_log_var.shape == z.shape == (4, 3)
  np.testing.assert_allclose(z, z_mean + tf.exp(0.5 * z_log_var) * epsilon,
                             rtol=1e-5)
  again = vae.encoder([images, epsilon])[2]
  np.testing.assert_array_equal(z, again)  # No hidden randomness.
  assert vae.decoder_logits(z).shape == (4, 28, 28, 1)
  assert vae.image_shape == (28, 28, 1) and vae.latent_dim == 3


def test_lambda_model_samples_inside_a_lambda_layer():
  vae = models.get("lambda").build((28, 28, 1), 2)
  import keras
  assert any(isinstance(layer, keras.layers.Lambda)
             for layer in vae.encoder.layers)


def test_lambda_model_works_under_tf_function_and_savedmodel(tmp_path):
  vae = models.get("lambda").build((28, 28, 1), 2)
  images, epsilon = tf.random.uniform([2, 28, 28, 1]), tf.random.normal([2, 2])
  eager = vae.encoder([images, epsilon])[2]
  traced = tf.function(lambda x, e: vae.encoder([x, e])[2])(images, epsilon)
  np.testing.assert_allclose(eager, traced, rtol=1e-6)
  module = tf.Module()
  module.encoder = vae.encoder
  module.f = tf.function(lambda x, e: vae.encoder([x, e])[2],
                         input_signature=[tf.TensorSpec([None, 28, 28, 1]),
                                          tf.TensorSpec([None, 2])])
  tf.saved_model.save(module, str(tmp_path))
  loaded = tf.saved_model.load(str(tmp_path))
  np.testing.assert_allclose(loaded.f(images, epsilon), eager, rtol=1e-6)


def test_conv_rejects_sides_not_divisible_by_four():
  with pytest.raises(ValueError, match="divisible by 4"):
    models.get("conv").build((30, 30, 1), 2)


def test_unknown_model_lists_the_known_ones():
  with pytest.raises(KeyError, match="one of conv, denoising, dense, "
                     "iwae_mlp, iwae_mlp2, lambda, mlp, or a builder as "
                     "package.module:function"):
    models.get("resnet")


def test_duplicate_registration_is_refused():
  with pytest.raises(ValueError, match="registered twice"):
    registry.register("dense", default_latent_dim=2, parameter_counts=(0, 0),
                      description="")(lambda shape, latent: None)
