"""Name -> model builder. Adding a model is one new module plus one import.

A model module decorates its builder with `@register(...)`; `models/__init__.py`
imports the module so the registration runs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from models import base
from models import conditional
from models.base import VariationalAutoencoder

Builder = Callable[[tuple, int], VariationalAutoencoder]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model.

  Attributes:
    name: The `--model` value.
    build: `build(image_shape, latent_dim) -> VariationalAutoencoder`; a pure
      builder with no training code.
    default_latent_dim: Latent size the source tutorial uses.
    default_noise_factor: Input noise the source tutorial trains with.
    parameter_counts: (encoder, decoder) parameter counts at the default
      latent size on 28x28x1 images, as in the source tutorial; tests assert
      them.
    description: One line for `--helpfull`.
    initializes_from_data: The builder takes a `pixel_mean` keyword (the
      training targets' mean image) to initialise its output layer.
  """

  name: str
  build: Builder
  default_latent_dim: int
  parameter_counts: tuple[int, int]
  description: str
  default_noise_factor: float = 0.0
  initializes_from_data: bool = False

  def create(self, image_shape: tuple, latent_dim: int, pixel_mean=None,
             learned_scale: bool = False,
             num_classes: int = 0) -> VariationalAutoencoder:
    """Builds the model.

    Args:
      image_shape: Shape of one image.
      latent_dim: Size of z.
      pixel_mean: The training targets' mean image, for builders that
        initialise from it.
      learned_scale: Attach a learned per-sub-pixel scale after the decoder.
      num_classes: K > 0 builds the label-conditional model
        (`models.conditional`); 0 the unconditional one.
    """
    decoder_model = self._build(image_shape, latent_dim + num_classes,
                                pixel_mean)
    if learned_scale:
      decoder_model = base.with_learned_scale(decoder_model)
    if not num_classes:
      return decoder_model
    encoder_model = self._build(
        conditional.labelled_image_shape(image_shape, num_classes),
        latent_dim, None)
    return conditional.conditional(encoder_model, decoder_model, num_classes)

  def _build(self, image_shape, latent_dim, pixel_mean):
    if self.initializes_from_data:
      return self.build(image_shape, latent_dim, pixel_mean=pixel_mean)
    return self.build(image_shape, latent_dim)


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, default_latent_dim: int,
             parameter_counts: tuple[int, int], description: str,
             default_noise_factor: float = 0.0,
             initializes_from_data: bool = False):
  """Decorator that registers a builder under `name`.

  Raises:
    ValueError: If the name is already taken.
  """

  def decorate(build: Builder) -> Builder:
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = ModelSpec(name, build, default_latent_dim,
                                parameter_counts, description,
                                default_noise_factor, initializes_from_data)
    return build

  return decorate


def get(name: str) -> ModelSpec:
  """Returns the spec registered under `name`.

  Raises:
    KeyError: With the list of known names, if `name` is not registered.
  """
  try:
    return _REGISTRY[name]
  except KeyError:
    raise KeyError(f"unknown model {name!r}; known models: "
                   f"{', '.join(names())}") from None


def names() -> list[str]:
  return sorted(_REGISTRY)
