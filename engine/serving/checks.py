"""The exported signatures' checks of their inputs.

Every float input is refused unless it has the signature's shape and only
finite values (images: in [0, 1] too), and `decode`'s latents unless they
decode to finite logits; labels must be classes, one per row; `sample`'s
`num` must be >= 0. A refused input is an InvalidArgumentError whose
message begins with the input's name, e.g. `z: shape [2 3], expected [N, 2]
(N latents of width 2)`, in every runtime that executes the graph (TF2's
loader, the session loader of TF Serving and `saved_model_cli run`).

The checks are `Assert` ops that the outputs depend on: they change no
output's value. The TFLite converter removes them (with or without select TF
ops), so LiteRT runs unchecked.

Each check is computed only once the one before it passed, so an input that
fails several gets the first one's message: shape, then finiteness, then
range. That order holds in the session loader too, which runs independent
ops in any order and feeds a tensor of any shape to a placeholder; the
reductions also flatten first, so no input shape makes one fail.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def _has_shape(x, dims: Sequence) -> tf.Tensor:
  """Whether `x` has `len(dims)` dimensions equal to `dims` (None: any);
  computed so that any shape of `x` gives True or False, never an error."""
  # The signature's static shape may be a lie (TF Serving's C++ session
  # feeds a tensor of any shape), so the shape is taken where nothing
  # static is known: `tf.size` of a static-length shape, or Grappler, would
  # fold the rank to the signature's.
  shape = tf.shape(tf.compat.v1.placeholder_with_default(x, shape=None),
                   out_type=tf.int32)
  rank = len(dims)
  padded = tf.concat([shape, tf.fill([rank], -1)], 0)[:rank]
  conditions = [tf.equal(tf.size(shape), rank)]
  conditions += [tf.equal(padded[i], dim) for i, dim in enumerate(dims)
                 if dim is not None]
  return tf.reduce_all(tf.stack(conditions))


def _dims(dims: Sequence) -> str:
  return "[" + ", ".join("N" if d is None else str(d) for d in dims) + "]"


def _flat(x):
  return tf.reshape(x, [-1])


class _Chain:
  """Asserts run one after another; `done(x)` is `x` once all passed."""

  def __init__(self):
    self._last = []

  def require(self, check) -> None:
    """Adds the Assert that `check()` builds, as (condition, message), after
    the previous one passed."""
    with tf.control_dependencies(self._last):
      condition, message = check()
      self._last = [tf.debugging.Assert(condition, [message], summarize=8)]

  def done(self, x):
    with tf.control_dependencies(self._last):
      return tf.identity(x)


def _shape(chain: _Chain, name: str, x, dims: Sequence, what: str,
           rows=None) -> None:
  """Requires `x`'s shape to be `dims`; a None first dimension is `rows`
  when given (the batch of the signature's other input)."""
  if rows is None:
    chain.require(lambda: (_has_shape(x, dims), tf.strings.format(
        f"{name}: shape {{}}, expected {_dims(dims)} ({what})", tf.shape(x))))
  else:
    chain.require(lambda: (_has_shape(x, [rows, *dims[1:]]), tf.strings.format(
        f"{name}: shape {{}}, expected [{{}}] ({what})", (tf.shape(x), rows))))


def _finite(chain: _Chain, name: str, x, hint: str) -> None:
  chain.require(lambda: (tf.reduce_all(tf.math.is_finite(_flat(x))),
                         f"{name}: holds NaN or Inf values; send {hint}"))


def images(x, image_shape: Sequence[int]):
  """Images [N, *image_shape], finite and in [0, 1]."""
  chain = _Chain()
  _shape(chain, "images", x, [None, *image_shape],
         "N images of " + "x".join(str(d) for d in image_shape))
  _finite(chain, "images", x, "finite pixel values in [0, 1]")

  def in_range():
    # An empty batch: min +inf, max -inf, refused by neither.
    low, high = tf.reduce_min(_flat(x)), tf.reduce_max(_flat(x))
    return tf.logical_and(low >= 0.0, high <= 1.0), tf.strings.format(
        "images: values from {} to {}, outside [0, 1]; send pixel values in "
        "[0, 1] (8-bit pixels / 255)", (low, high))

  chain.require(in_range)
  return chain.done(x)


def latents(z, latent_dim: int, name: str = "z"):
  """Latents [N, latent_dim], finite (`name`: the input, in messages)."""
  chain = _Chain()
  _shape(chain, name, z, [None, latent_dim],
         f"N latents of width {latent_dim}")
  _finite(chain, name, z, "finite latents (the prior is N(0, I))")
  return chain.done(z)


def decoded(logits):
  """The decoder's logits, once known finite: a finite `z` so large that
  the decoder overflows is named as `z`'s fault."""
  chain = _Chain()
  chain.require(lambda: (
      tf.reduce_all(tf.math.is_finite(_flat(logits))),
      "z: too large, the decoder's logits overflow to NaN or Inf; send "
      "latents of the prior's scale (N(0, I))"))
  return chain.done(logits)


def labels(x, num_classes: int, rows=None):
  """Class labels: [rows] of them (a scalar, for rows=None), each in
  [0, num_classes)."""
  chain = _Chain()
  if rows is None:
    _shape(chain, "label", x, [], "one class for all the samples")
  else:
    _shape(chain, "label", x, [None], "one class per row of the batch",
           rows=rows)
  chain.require(lambda: (
      tf.reduce_all(_flat(tf.logical_and(x >= 0, x < num_classes))),
      tf.strings.format(f"label: {{}}, expected classes in [0, {num_classes})",
                        x, summarize=8)))
  return chain.done(x)


def count(num):
  """`sample`'s number of draws: one number, >= 0."""
  chain = _Chain()
  _shape(chain, "num", num, [], "one number of samples")
  chain.require(lambda: (num >= 0, tf.strings.format(
      "num: {}, expected a number of samples >= 0", num)))
  return chain.done(num)
