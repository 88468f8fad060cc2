"""Conditional models from every builder through one wrapper
(models.conditional)."""

import keras
import numpy as np
import pytest

import models
from models import contract
from models import conditional

_IMAGES = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(
    np.float32)


def _create(name, **kwargs):
  keras.utils.set_random_seed(0)
  spec = models.get(name)
  return spec.create((28, 28, 1), 3, pixel_mean=np.full((28, 28, 1), 0.2,
                                                        np.float32), **kwargs)


_HIERARCHICAL = ("iwae_mlp2",)


def test_a_hierarchical_model_is_refused_as_conditional_with_one_line():
  with pytest.raises(contract.ContractError, match=(
      r"^--model=iwae_mlp2: a hierarchical model cannot be made conditional "
      r"on labels; drop --conditional$")):
    _create("iwae_mlp2", num_classes=10)


@pytest.mark.parametrize("name", sorted(set(models.names()) -
                                        set(_HIERARCHICAL)))
def test_every_builder_becomes_conditional_on_the_label(name):
  vae = _create(name, num_classes=10)
  assert vae.conditional and vae.num_classes == 10
  assert vae.image_shape == (28, 28, 1) and vae.latent_dim == 3
  z = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
  as_three = vae.decoder_probabilities(z, np.array([3, 3, 3, 3]))
  as_seven = vae.decoder_probabilities(z, np.array([7, 7, 7, 7]))
  assert as_three.shape == (4, 28, 28, 1)
  # The label reaches the decoder and the encoder.
  assert np.abs(np.asarray(as_three) - np.asarray(as_seven)).max() > 1e-4
  mean_three, _ = vae.posterior(_IMAGES, np.array([3, 3, 3, 3]))
  mean_seven, _ = vae.posterior(_IMAGES, np.array([7, 7, 7, 7]))
  assert mean_three.shape == (4, 3)
  assert np.abs(np.asarray(mean_three) - np.asarray(mean_seven)).max() > 1e-5
  # Row i depends on label i only: rows do not mix.
  mixed = vae.decoder_probabilities(z, np.array([3, 7, 3, 7]))
  np.testing.assert_allclose(np.asarray(mixed)[1], np.asarray(as_seven)[1],
                             atol=1e-6)


def test_a_conditional_model_needs_its_labels():
  vae = _create("conv", num_classes=10)
  with pytest.raises(ValueError, match="conditional on 10 classes: pass "
                     "labels"):
    vae.decoder_probabilities(np.zeros((2, 3), np.float32))
  with pytest.raises(ValueError, match="pass labels"):
    vae.posterior(_IMAGES)


def test_an_unconditional_model_ignores_labels_and_is_unchanged():
  vae = _create("dense")
  assert not vae.conditional and vae.num_classes == 0
  z = np.zeros((2, 3), np.float32)
  np.testing.assert_array_equal(vae.decoder_probabilities(z, np.array([1, 2])),
                                vae.decoder_probabilities(z))
  # The wrapper is not there at all: the builder's own models.
  assert vae.encoder.name == "encoder"


def test_the_wrapper_feeds_the_builders_models_the_label():
  vae = _create("conv", num_classes=10)
  inner_encoder = vae.encoder.get_layer("encoder")
  inner_decoder = vae.decoder.get_layer("decoder")
  # Images with the label's 10 planes; z with the one-hot appended.
  assert tuple(inner_encoder.inputs[0].shape[1:]) == (28, 28, 11)
  assert inner_decoder.inputs[0].shape[-1] == 13
  planes = conditional.LabelPlanes(2, 3)(np.eye(4, dtype=np.float32)[[1, 3]])
  assert planes.shape == (2, 2, 3, 4)
  np.testing.assert_array_equal(np.asarray(planes)[0, :, :, 1], np.ones((2, 3)))
  assert float(np.asarray(planes)[0].sum()) == 6.0


def test_learned_scale_sits_inside_the_conditional_decoder():
  vae = _create("conv", num_classes=10, learned_scale=True)
  assert vae.log_scale is not None
  assert tuple(vae.log_scale.shape) == (28, 28, 1)
  assert any(v is vae.log_scale for v in vae.trainable_variables)


def test_too_few_classes_are_refused():
  with pytest.raises(ValueError, match="at least 2 classes"):
    _create("dense", num_classes=1)
