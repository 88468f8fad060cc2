"""SavedModel export with named serving signatures.

The export is a `tf.Module` with explicit input signatures, so it loads with
`tf.saved_model.load` (or TF Serving) in a process that never imported our
code, and needs no Python lambdas or pickles. Images are float32 in [0, 1];
the decoder's outputs are probabilities (`images`) and their `logits`. Outputs are float32
whatever policy the model computed in.

Layout follows TF Serving: `<export_dir>/<step>/`. Each version is written to
a temporary directory beside it and renamed into place only when complete, so
a killed export never leaves a directory that looks complete but is not, and
never touches an earlier version.
"""

from __future__ import annotations

import uuid

import tensorflow as tf

from engine import files
from models.base import VariationalAutoencoder

class ServingModule(tf.Module):
  """The exported functions of one VAE.

  Signatures: `encode(images)`, `decode(z)`, `reconstruct(images)` (also
  `serving_default`), `sample(num)` and, for denoising runs,
  `denoise(images)`. A conditional model's take the label too:
  `encode(images, label)`, `decode(z, label)`, `reconstruct(images, label)`
  with int32 labels [N], and `sample(num, label)` with one int32 label for
  all `num` samples; a label outside [0, num_classes) is an
  InvalidArgumentError, not a silent all-zero one-hot. `num_classes` is saved
  with the model (0: unconditional).

  Args:
    vae: The trained model.
    denoising: Also export a `denoise` signature.
  """

  def __init__(self, vae: VariationalAutoencoder, denoising: bool = False):
    super().__init__(name="vae")
    # Tracked, so that SavedModel saves their variables.
    self.encoder = vae.encoder
    self.decoder = vae.decoder
    self.latent_dim = vae.latent_dim
    self.num_classes = tf.Variable(vae.num_classes, trainable=False,
                                   name="num_classes")
    self._vae = vae
    image_spec = tf.TensorSpec([None, *vae.image_shape], tf.float32,
                               name="images")
    latent_spec = tf.TensorSpec([None, vae.latent_dim], tf.float32, name="z")
    count_spec = tf.TensorSpec([], tf.int32, name="num")
    labels = ([tf.TensorSpec([None], tf.int32, name="label")]
              if vae.conditional else [])
    label = ([tf.TensorSpec([], tf.int32, name="label")]
             if vae.conditional else [])
    self.encode = tf.function(self._encode,
                              input_signature=[image_spec, *labels])
    self.decode = tf.function(self._decode,
                              input_signature=[latent_spec, *labels])
    self.reconstruct = tf.function(self._reconstruct,
                                   input_signature=[image_spec, *labels])
    self.sample = tf.function(self._sample,
                              input_signature=[count_spec, *label])
    self.denoise = (tf.function(self._reconstruct,
                                input_signature=[image_spec, *labels])
                    if denoising else None)

  def _checked(self, labels):
    """The labels, once checked to be classes of the model."""
    if labels is None:
      return None
    with tf.control_dependencies([
        tf.debugging.assert_non_negative(labels, message="label < 0"),
        tf.debugging.assert_less(labels, tf.constant(self._vae.num_classes),
                                 message="label >= num_classes")]):
      return tf.identity(labels)

  def _encode(self, images, labels=None):
    z_mean, z_log_var = self._vae.posterior(images, self._checked(labels))
    return {"z_mean": z_mean, "z_log_var": z_log_var}

  def _decode(self, z, labels=None):
    return self._decoded(z, self._checked(labels))

  def _decoded(self, z, labels):
    """The decoder's outputs for labels already checked."""
    logits = self._vae.decoder_logits(z, labels)
    # Logits too: likelihoods (tools/evaluate.py) need them for stability;
    # and the learned per-sub-pixel log-scale, for likelihoods with one.
    outputs = {"images": tf.sigmoid(logits), "logits": logits}
    if self._vae.log_scale is not None:
      outputs["log_scale"] = tf.broadcast_to(self._vae.log_scale,
                                             tf.shape(logits))
    return outputs

  def _reconstruct(self, images, labels=None):
    labels = self._checked(labels)
    return self._decoded(self._vae.posterior_mean(images, labels), labels)

  def _sample(self, num, label=None):
    labels = None if label is None else tf.fill([num], self._checked(label))
    return self._decoded(tf.random.normal([num, self.latent_dim]), labels)

  def signatures(self) -> dict:
    """Signature name -> concrete function, for `tf.saved_model.save`."""
    signatures = {
        "serving_default": self.reconstruct.get_concrete_function(),
        "encode": self.encode.get_concrete_function(),
        "decode": self.decode.get_concrete_function(),
        "reconstruct": self.reconstruct.get_concrete_function(),
        "sample": self.sample.get_concrete_function(),
    }
    if self.denoise is not None:
      signatures["denoise"] = self.denoise.get_concrete_function()
    return signatures


def recover(export_dir: str) -> None:
  """Cleans up after an exporter that was killed part-way.

  A version retired for replacement (`.old-<v>-*/old`) whose replacement never
  arrived is put back; unfinished `.tmp-*` directories are removed. Assumes a
  single exporter per directory (the chief).
  """
  for entry in sorted(files.gfile.listdir(export_dir)):
    entry = entry.rstrip("/")
    path = files.join(export_dir, entry)
    if entry.startswith(".old-"):
      version = entry.split("-")[1]
      retired = files.join(path, "old")
      if files.gfile.isdir(retired) and not files.gfile.exists(
          files.join(export_dir, version)):
        files.move_tree(retired, files.join(export_dir, version))
      files.remove_tree(path)
    elif entry.startswith(".tmp-"):
      files.remove_tree(path)


def export(vae: VariationalAutoencoder, export_dir: str, version: int,
           denoising: bool = False) -> str:
  """Writes `<export_dir>/<version>/` atomically and returns its path.

  An existing export of the same version is replaced only once the new one is
  complete.

  Args:
    vae: The model to export.
    export_dir: Parent of the versioned exports.
    version: The version (the training step).
    denoising: Add the `denoise` signature.

  Returns:
    The path of the finished export.
  """
  files.gfile.makedirs(export_dir)
  recover(export_dir)
  final = files.join(export_dir, str(version))
  unique = uuid.uuid4().hex[:8]
  staging = files.join(export_dir, f".tmp-{version}-{unique}")
  try:
    module = ServingModule(vae, denoising=denoising)
    tf.saved_model.save(module, staging, signatures=module.signatures())
    if files.gfile.exists(final):
      retired = files.join(export_dir, f".old-{version}-{unique}")
      files.move_tree(final, files.join(retired, "old"))
      files.move_tree(staging, final)
      files.remove_tree(retired)
    else:
      files.move_tree(staging, final)
  except BaseException:
    files.remove_tree(staging)
    raise
  return final
