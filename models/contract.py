"""The checker of the model contract (`models.base`), for any builder.

The engine trains, evaluates and exports a model only through the contract:
`encoder([images, epsilon]) -> [z_mean, z_log_var, z]` with
`z = z_mean + exp(z_log_var / 2) * epsilon`, and `decoder(z) -> logits` of the
images' shape, deterministic given their inputs (the noise is the engine's,
drawn statelessly, so runs resume bit-exactly and replicas differ). A builder
that breaks it is refused before training with one line naming the model and
what is wrong, instead of failing somewhere inside a compiled step, or
training a model whose ELBO is not what it claims:

* `check_structure` (cheap, no weights touched, run by every
  `ModelSpec.create`): the types, inputs and outputs and their shapes;
* `check_behaviour` (runs the model on a small batch, changing no weight):
  no random op inside, outputs finite and floating, z made from the noise
  as the contract says.

A builder's own test can call both (see the docs' "Write your own model").
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from engine.errors import UserError
from models.base import VariationalAutoencoder

# Ops that draw randomness from state the engine does not control: stateful
# kernels, and the stateless ones Keras 3 feeds from a SeedGenerator variable.
_RANDOM_OP = ("Random", "Multinomial", "TruncatedNormal")
_CHECK_BATCH = 2


class ContractError(UserError):
  """A model that breaks the contract, named as `--model=NAME`."""

  def __init__(self, model: str, problem: str, remedy: str = (
      "see models/base.py for the contract")):
    super().__init__(f"--model={model}: {problem}; {remedy}")


def _shape(tensor) -> tuple:
  return tuple(tensor.shape)


def check_structure(vae, name: str, image_shape: tuple,
                    latent_dim: int) -> None:
  """What a builder returned, its models' inputs and outputs.

  Args:
    vae: What the builder returned for (image_shape, latent_dim).
    name: The model's `--model` name, for messages.
    image_shape: The images' shape it was asked for.
    latent_dim: The latent size it was asked for.

  Raises:
    ContractError: Naming the first thing that is wrong.
  """
  if not isinstance(vae, VariationalAutoencoder):
    raise ContractError(name, f"the builder returned a {type(vae).__name__}, "
                        "not a models.VariationalAutoencoder")
  for part in ("encoder", "decoder"):
    if not isinstance(getattr(vae, part), keras.Model):
      raise ContractError(name, f"its {part} is a "
                          f"{type(getattr(vae, part)).__name__}, not a "
                          "keras.Model")
  images, latent = (None, *image_shape), (None, latent_dim)
  encoder, decoder = vae.encoder, vae.decoder
  inputs = [_shape(t) for t in encoder.inputs]
  if inputs != [images, latent]:
    raise ContractError(name, f"its encoder takes inputs of shapes {inputs}, "
                        f"not [images {images}, epsilon {latent}]")
  outputs = [_shape(t) for t in encoder.outputs]
  if outputs != [latent] * 3:
    raise ContractError(name, f"its encoder returns shapes {outputs}, not "
                        f"[z_mean, z_log_var, z] of {latent} each")
  inputs = [_shape(t) for t in decoder.inputs]
  if inputs != [latent]:
    raise ContractError(name, f"its decoder takes inputs of shapes {inputs}, "
                        f"not [z {latent}]")
  outputs = [_shape(t) for t in decoder.outputs]
  if vae.hierarchical:
    _check_groups(vae, name, latent_dim)
    if outputs != [images, latent, latent]:
      raise ContractError(name, f"its decoder returns shapes {outputs}, not "
                          f"[logits {images}, prior_mean {latent}, "
                          f"prior_log_var {latent}]", _HIERARCHY)
  elif outputs != [images]:
    raise ContractError(name, f"its decoder returns shapes {outputs}, not "
                        f"[logits {images}] (the images' shape)")
  if not vae.trainable_variables:
    raise ContractError(name, "it has no trainable weights")


_HIERARCHY = "see models/hierarchy.py for the contract"


def _check_groups(vae, name: str, latent_dim: int) -> None:
  sizes = vae.group_sizes
  if (not isinstance(sizes, tuple) or len(sizes) < 2 or any(
      not isinstance(size, int) or isinstance(size, bool) or size < 1
      for size in sizes) or sum(sizes) != latent_dim):
    raise ContractError(name, f"its group_sizes {sizes!r} are not two or more "
                        f"positive ints adding up to the latent size "
                        f"{latent_dim}", _HIERARCHY)


def check_prior_order(vae, name: str, noise) -> None:
  """Each group's prior moments depend on the groups above it only: changing
  a group and those below leaves them as they were (ancestral sampling and
  the prior's density need it)."""
  z = noise[0]
  moments = [np.asarray(t) for t in vae.prior_moments(z)]
  for group in vae.group_slices():
    changed = z.copy()
    changed[:, :group.stop] = noise[1][:, :group.stop]
    again = [np.asarray(t) for t in vae.prior_moments(changed)]
    if any(not np.array_equal(a[:, group], b[:, group])
           for a, b in zip(moments, again)):
      raise ContractError(
          name, f"the prior of its latent columns {group.start}:"
          f"{group.stop} changes with those columns or the ones before "
          "them", "make p(z_g | z_>g) a function of the groups above g "
          "(the top group last)")
  if not all(np.isfinite(t).all() for t in moments):
    raise ContractError(name, "its decoder's prior moments are not finite",
                        _HIERARCHY)


def random_ops(vae: VariationalAutoencoder) -> list[str]:
  """The random ops a training step of `vae` would run (traced, not run)."""
  images = tf.TensorSpec((None, *vae.image_shape), tf.float32)
  epsilon = tf.TensorSpec((None, vae.latent_dim), tf.float32)
  labels = tf.TensorSpec((None,), tf.int32)

  def step(images, epsilon, labels):
    encoded = vae.encode(images, epsilon, labels if vae.conditional else None,
                         training=True)
    return vae.decoder_logits(encoded[2], labels if vae.conditional else None,
                              training=True)

  graph_def = tf.function(step).get_concrete_function(
      images, epsilon, labels).graph.as_graph_def()
  nodes = [*graph_def.node, *(node for function in graph_def.library.function
                               for node in function.node_def)]
  found = {node.op for node in nodes
           if any(word in node.op for word in _RANDOM_OP)}
  return sorted(found)


def check_behaviour(vae: VariationalAutoencoder,
                    name: Optional[str] = None) -> None:
  """Runs `vae` on a small batch (no weight changes) and checks what it does.

  Args:
    vae: A model that passed `check_structure`.
    name: Its `--model` name (default: `vae.name`).

  Raises:
    ContractError: Naming the first thing that is wrong.
  """
  name = name or vae.name
  randoms = random_ops(vae)
  if randoms:
    raise ContractError(
        name, f"it draws its own random numbers ({', '.join(randoms)}): "
        "noise drawn inside the model breaks exact resume and differs "
        "between replicas and exports", "take all noise from the epsilon "
        "input (dropout and Keras random layers draw their own)")
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(_CHECK_BATCH, *vae.image_shape)).astype(
      np.float32)
  labels = (np.arange(_CHECK_BATCH, dtype=np.int32) % vae.num_classes
            if vae.conditional else None)
  noise = rng.standard_normal((2, _CHECK_BATCH, vae.latent_dim)).astype(
      np.float32)
  first = [np.asarray(t) for t in vae.encode(images, noise[0], labels)]
  again = [np.asarray(t) for t in vae.encode(images, noise[0], labels)]
  other = np.asarray(vae.encode(images, noise[1], labels)[2])
  for label, value in zip(("z_mean", "z_log_var", "z"), first):
    if not np.issubdtype(value.dtype, np.floating) and value.dtype.name != (
        "bfloat16"):
      raise ContractError(name, f"its encoder's {label} is {value.dtype}, "
                          "not floating point")
  as_float = [t.astype(np.float32) for t in first]
  if not all(np.isfinite(t).all() for t in as_float):
    raise ContractError(name, "its encoder returns non-finite values for "
                        "images in [0, 1]")
  if any(not np.array_equal(a, b, equal_nan=True)
         for a, b in zip(first, again)):
    raise ContractError(name, "its encoder gives different outputs for the "
                        "same images and noise", "make it deterministic")
  z_mean, z_log_var, z = as_float
  expected = z_mean + np.exp(0.5 * z_log_var) * noise[0]
  tolerance = 1e-4 if first[2].dtype == np.float32 else 3e-2
  if not np.allclose(z, expected, rtol=tolerance, atol=tolerance) or (
      np.array_equal(other, first[2])):
    raise ContractError(name, "its encoder's z is not z_mean + "
                        "exp(z_log_var / 2) * epsilon (the ELBO's KL assumes "
                        "it)", "compute z with models.base.Reparameterize")
  z = keras.ops.convert_to_tensor(first[2])
  raw = vae.decoder(z if not vae.conditional else [
      z, keras.ops.one_hot(labels, vae.num_classes)])
  if vae.hierarchical:
    raw = raw[0]
    check_prior_order(vae, name, noise)
  if not np.issubdtype(np.asarray(raw).dtype, np.floating) and (
      np.asarray(raw).dtype.name != "bfloat16"):
    raise ContractError(name, f"its decoder returns non-floating logits "
                        f"({np.asarray(raw).dtype})")
  logits = np.asarray(vae.decoder_logits(first[2], labels))
  if not np.isfinite(logits).all():
    raise ContractError(name, "its decoder returns non-finite logits")
  if not np.array_equal(logits, np.asarray(vae.decoder_logits(first[2],
                                                                labels))):
    raise ContractError(name, "its decoder gives different logits for the "
                        "same z", "make it deterministic")
