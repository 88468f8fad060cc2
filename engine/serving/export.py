"""SavedModel export with named serving signatures.

The export is a `tf.Module` with explicit input signatures, so it loads with
`tf.saved_model.load` (or TF Serving) in a process that never imported our
code, and needs no Python lambdas or pickles. Images are float32 in [0, 1];
the decoder's outputs are probabilities (`images`) and their `logits`. Outputs are float32
whatever policy the model computed in.

Layout follows TF Serving: `<export_dir>/<step>/`. Each version is written to
a temporary directory beside it and renamed into place only when complete, so
a killed export never leaves a directory that looks complete but is not, and
never touches an earlier version. Each version is marked as this engine's
(`MARKER`), and nothing at a version's path that lacks the mark is ever
replaced: a user's own files there are refused, not deleted.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Sequence

import tensorflow as tf

import models
from engine.io import files
from engine.devices import precision
from engine.serving import warmup
from engine.serving import tflite
from engine.errors import UserError, quoted, reason
from models.base import VariationalAutoencoder

# Written into every version: an export this engine wrote and may replace.
MARKER = "assets.extra/vae_engine_export.json"
# The exporter's own temporary entries: `.tmp-<version>-<8 hex>` (being
# written) and `.old-<version>-<8 hex>` (retired while being replaced).
_OWN_ENTRY = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]{8}")

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
    # The `tf.Variable`s themselves, not the Keras models: a Keras 3
    # variable is a wrapper whose SavedModel node restores only through
    # `tf.saved_model.load`. The session loader (TF Serving, saved_model_cli)
    # and the TFLite converter restore the variables the saver holds, and the
    # signatures read the wrapped `tf.Variable`s, so those are what is saved.
    self.weights = _tf_variables(vae.encoder, vae.decoder)
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
    z = tf.random.normal([num, self.latent_dim])
    # The draws too: a client can decode them again, keep the codes it
    # liked, and any runtime's samples can be checked against `decode`.
    return {**self._decoded(z, labels), "z": z}

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


def float32_model(vae: VariationalAutoencoder) -> VariationalAutoencoder:
  """The model computing in float32: itself, or a float32 twin holding its
  weights (a model trained under a mixed policy computes in bfloat16 or
  float16, which LiteRT cannot run and CPUs serve slowly; its weights are
  float32 already)."""
  # A model takes the policy it was built under, as its layers do.
  if vae.encoder.compute_dtype == vae.decoder.compute_dtype == "float32":
    return vae
  with precision.policy_scope("float32"):
    twin = models.get(vae.name).create(
        vae.image_shape, vae.latent_dim,
        learned_scale=vae.log_scale is not None, num_classes=vae.num_classes)
  for ours, theirs in zip(twin.encoder.weights + twin.decoder.weights,
                          vae.encoder.weights + vae.decoder.weights):
    if ours.shape != theirs.shape:
      raise ValueError(f"cannot rebuild {vae.name} in float32: "
                       f"{ours.path} {ours.shape} != {theirs.shape}")
    ours.assign(theirs)
  return twin


def _tf_variables(*keras_models) -> list[tf.Variable]:
  """The `tf.Variable`s under the models' Keras variables, each once."""
  variables = {}
  for model in keras_models:
    for variable in model.weights:
      tf_variable = getattr(variable, "value", variable)
      variables[id(tf_variable)] = tf_variable
  return list(variables.values())


def recover(export_dir: str) -> None:
  """Cleans up after an exporter that was killed part-way.

  A version retired for replacement (`.old-<v>-*/old`) whose replacement never
  arrived is put back; unfinished `.tmp-*` directories are removed. Assumes a
  single exporter per directory (the chief).
  """
  for entry in sorted(files.gfile.listdir(export_dir)):
    entry = entry.rstrip("/")
    path = files.join(export_dir, entry)
    match = _OWN_ENTRY.fullmatch(entry)
    if not match:
      continue  # Not ours: never touched.
    if match.group(1) == "old":
      version = match.group(2)
      retired = files.join(path, "old")
      if files.gfile.isdir(retired) and not files.gfile.exists(
          files.join(export_dir, version)):
        files.move_tree(retired, files.join(export_dir, version))
      files.remove_tree(path)
    else:
      files.remove_tree(path)


def is_engine_export(path: str) -> bool:
  """Whether `path` is a version directory this engine wrote."""
  return files.gfile.exists(files.join(path, MARKER))


def check_replaceable(export_dir: str, version: int) -> None:
  """Raises a UserError if `<export_dir>/<version>` holds anything but an
  export of this engine (which a new export of that version replaces)."""
  path = files.join(export_dir, str(version))
  if not files.gfile.exists(path) or is_engine_export(path):
    return
  what = "a directory" if files.gfile.isdir(path) else "a file"
  raise UserError(
      f"--export_dir={quoted(export_dir)}: {quoted(path)} is {what} that "
      f"vae-engine did not write (no {MARKER}), where the export of step "
      f"{version} goes; move it away or pass another --export_dir")


def export(vae: VariationalAutoencoder, export_dir: str, version: int,
           denoising: bool = False,
           tflite_variants: Sequence[str] = ()) -> str:
  """Writes `<export_dir>/<version>/` atomically and returns its path.

  The version holds the SavedModel, TF Serving's warm-up requests
  (`serving_warmup`) and, if asked, each signature as a LiteRT model
  (`tflite`). An existing export of the same version is replaced only once
  the new one is complete.

  Args:
    vae: The model to export.
    export_dir: Parent of the versioned exports.
    version: The version (the training step).
    denoising: Add the `denoise` signature.
    tflite_variants: `tflite.VARIANTS` to convert every signature to.

  Returns:
    The path of the finished export.

  Raises:
    UserError: If the version's path holds something this engine did not
      write, or the export cannot be written (the OS's reason); nothing
      half-written is left.
  """
  try:
    files.gfile.makedirs(export_dir)
    recover(export_dir)
  except (OSError, tf.errors.OpError) as e:
    raise UserError(f"--export_dir={quoted(export_dir)}: not writable "
                    f"({reason(e)})") from None
  check_replaceable(export_dir, version)
  final = files.join(export_dir, str(version))
  unique = uuid.uuid4().hex[:8]
  staging = files.join(export_dir, f".tmp-{version}-{unique}")
  try:
    module = ServingModule(float32_model(vae), denoising=denoising)
    signatures = module.signatures()
    tf.saved_model.save(module, staging, signatures=signatures)
    warmup.write(staging, signatures)
    if tflite_variants:
      tflite.write(staging, sorted(signatures), tflite_variants)
    files.gfile.makedirs(files.join(staging, "assets.extra"))
    files.write_atomically(files.join(staging, MARKER), json.dumps({
        "written_by": "vae-engine", "version": version, "model": vae.name,
        "signatures": sorted(signatures)}, indent=2))
    if files.gfile.exists(final):
      retired = files.join(export_dir, f".old-{version}-{unique}")
      files.move_tree(final, files.join(retired, "old"))
      files.move_tree(staging, final)
      files.remove_tree(retired)
    else:
      files.move_tree(staging, final)
  except (OSError, tf.errors.OpError) as e:
    files.remove_tree(staging)
    raise UserError(f"--export_dir={quoted(export_dir)}: could not write the "
                    f"export of step {version} ({reason(e)}); nothing of it "
                    "was kept") from None
  except BaseException:
    files.remove_tree(staging)
    raise
  return final
