"""Name -> model builder: the engine's own, the installed packages', and any
`package.module:function`.

The engine's models decorate their builders with `@register(...)`, and
`models/__init__.py` imports their modules so the registrations run. A user's
builder needs no change to the engine (`models.plugins`): `get` finds it by
its entry point or its reference, and `create` checks what it built against
the contract (`models.contract`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from models import base
from models import conditional
from models import contract
from models.learned_scale import with_learned_scale
from models.base import VariationalAutoencoder

Builder = Callable[[tuple, int], VariationalAutoencoder]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model.

  Attributes:
    name: The `--model` value.
    build: `build(image_shape, latent_dim) -> VariationalAutoencoder`; a pure
      builder with no training code.
    default_latent_dim: Latent size the source tutorial uses (None: the
      user must pass `--latent_dim`).
    description: One line for `--helpfull` and `--list_models`.
    parameter_counts: (encoder, decoder) parameter counts at the default
      latent size on 28x28x1 images, as in the source tutorial, which tests
      assert; None where there is no source to agree with.
    default_noise_factor: Input noise the source tutorial trains with.
    initializes_from_data: The builder takes a `pixel_mean` keyword (the
      training targets' mean image) to initialise its output layer.
  """

  name: str
  build: Builder
  default_latent_dim: Optional[int]
  description: str
  parameter_counts: Optional[tuple[int, int]] = None
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

    Raises:
      ValueError: If the builder cannot take these images (its own words).
      contract.ContractError: If it fails otherwise, or builds something that
        breaks the contract's structure.
    """
    decoder_model = self._build(image_shape, latent_dim + num_classes,
                                pixel_mean)
    if num_classes and decoder_model.hierarchical:
      raise contract.ContractError(
          self.name, "a hierarchical model cannot be made conditional on "
          "labels", "drop --conditional")
    if learned_scale:
      decoder_model = with_learned_scale(decoder_model)
    if num_classes:
      encoder_model = self._build(
          conditional.labelled_image_shape(image_shape, num_classes),
          latent_dim, None)
      decoder_model = conditional.conditional(encoder_model, decoder_model,
                                              num_classes)
    return dataclasses.replace(decoder_model, name=self.name)

  def _build(self, image_shape, latent_dim, pixel_mean):
    image_shape, latent_dim = tuple(image_shape), int(latent_dim)
    try:
      if self.initializes_from_data:
        built = self.build(image_shape, latent_dim, pixel_mean=pixel_mean)
      else:
        built = self.build(image_shape, latent_dim)
    except ValueError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (a user's builder)
      raise contract.ContractError(
          self.name, f"the builder raised {type(e).__name__}: "
          f"{' '.join(str(e).split())[:300]}", "fix the builder") from e
    contract.check_structure(built, self.name, image_shape, latent_dim)
    return built


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, default_latent_dim: int, description: str,
             parameter_counts: Optional[tuple[int, int]] = None,
             default_noise_factor: float = 0.0,
             initializes_from_data: bool = False):
  """Decorator that registers a builder under `name`.

  Raises:
    ValueError: If the name is already taken.
  """

  def decorate(build: Builder) -> Builder:
    if name in _REGISTRY:
      raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = ModelSpec(
        name=name, build=build, default_latent_dim=default_latent_dim,
        description=description, parameter_counts=parameter_counts,
        default_noise_factor=default_noise_factor,
        initializes_from_data=initializes_from_data)
    return build

  return decorate


def get(name: str) -> ModelSpec:
  """Returns the spec `name` names: the engine's model of that name, else an
  installed package's (`vae_engine.models` entry point), else the builder a
  `package.module:function` reference names.

  Raises:
    KeyError: With the known names, if `name` names no model.
    models.plugins.PluginError: If it names a user's builder that cannot be
      loaded (a `UserError`: one line naming the model).
  """
  if name in _REGISTRY:
    return _REGISTRY[name]
  from models import plugins  # pylint: disable=g-import-not-at-top  (cycle)
  found = plugins.resolve(name)
  if found is None:
    raise KeyError(f"unknown model {name!r}; one of {', '.join(available())}"
                   ", or a builder as package.module:function")
  return found


def names() -> list[str]:
  """The engine's own models."""
  return sorted(_REGISTRY)


def available() -> list[str]:
  """The engine's models and the installed packages' (a built-in name wins
  over an installed one)."""
  from models import plugins  # pylint: disable=g-import-not-at-top  (cycle)
  return names() + sorted(set(plugins.installed()) - set(_REGISTRY))


def described() -> list[tuple[str, str]]:
  """(name, description) of every available model: the engine's, then the
  installed packages' (one that cannot be loaded says why)."""
  from models import plugins  # pylint: disable=g-import-not-at-top  (cycle)
  return [(name, _REGISTRY[name].description) for name in names()] + (
      plugins.describe_installed())
