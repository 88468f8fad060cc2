"""A loaded export, read through its serving signatures (`engine.serving.export`).

What the tools and the likelihood need from a SavedModel: its latent size,
its number of classes (0: unconditional), and `encode`, `decode` and
`sample` that take labels and pass them on only to a conditional model's
signatures, so no caller branches on the kind of model.
"""

from __future__ import annotations

import tensorflow as tf

from engine.errors import UserError, quoted, reason


class Exported:
  """An export loaded with `tf.saved_model.load`.

  Args:
    loaded: What `tf.saved_model.load` returned.
    path: Where it was loaded from (named in errors).
  """

  def __init__(self, loaded, path: str = "the export"):
    self.loaded = loaded
    self.path = path
    self.latent_dim = int(loaded.signatures["decode"]
                          .structured_input_signature[1]["z"].shape[-1])
    self.image_shape = tuple(loaded.signatures["encode"]
                             .structured_input_signature[1]["images"]
                             .shape[1:])
    # Exports older than conditional models have no `num_classes`.
    self.num_classes = (int(loaded.num_classes.numpy())
                        if hasattr(loaded, "num_classes") else 0)
    # A hierarchical model's groups, the top group last (else one group).
    self.group_sizes = (tuple(int(size) for size in
                              loaded.group_sizes.numpy())
                        if hasattr(loaded, "group_sizes")
                        else (self.latent_dim,))
    self.hierarchical = len(self.group_sizes) > 1
    # Floats per example of the decoder's layers (unknown, or an older
    # export: None).
    self.decoder_floats = (int(loaded.decoder_floats.numpy()) or None
                           if hasattr(loaded, "decoder_floats") else None)

  @classmethod
  def load(cls, path: str) -> "Exported":
    """Loads `path`, the `--saved_model` flag's value.

    Raises:
      UserError: Naming `--saved_model`, if it is not a loadable export.
    """
    try:
      return cls(tf.saved_model.load(path), path)
    except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
      raise UserError(f"--saved_model={quoted(path)}: cannot load it "
                      f"({reason(e)}); pass a version directory such as "
                      "<export_dir>/<step>") from None

  def _call(self, signature: str, labels, **inputs) -> dict:
    inputs = {name: tf.convert_to_tensor(value)
              for name, value in inputs.items()}
    if self.num_classes:
      inputs["label"] = tf.cast(labels, tf.int32)
    return self.loaded.signatures[signature](**inputs)

  def encode(self, images, labels=None) -> dict:
    """`z_mean`, `z_log_var` of float32 images [N, ...] (labels int [N])."""
    return self._call("encode", labels, images=images)

  def decode(self, z, labels=None) -> dict:
    """`images`, `logits` (and `log_scale`) of latents [N, D]."""
    return self._call("decode", labels, z=z)

  def sample(self, num: int, label=None) -> dict:
    """`num` prior samples (of class `label`, for a conditional model)."""
    return self._call("sample", label, num=tf.constant(num, tf.int32))
