"""The exported functions of one VAE: a `tf.Module` with named signatures.

Each signature checks its inputs first (`engine.serving.checks`): a wrong
shape, a NaN or Inf, pixels outside [0, 1], a latent too large to decode or
a label that is not a class is an InvalidArgumentError naming the input.
For inputs it accepts, the outputs are what they were without the checks.
"""

from __future__ import annotations

import tensorflow as tf

from engine.serving import checks
from models.base import VariationalAutoencoder, decoder_floats


class ServingModule(tf.Module):
  """The exported functions of one VAE.

  Signatures: `encode(images)`, `decode(z)`, `reconstruct(images)` (also
  `serving_default`), `sample(num)` and, for denoising runs,
  `denoise(images)`. A hierarchical model's `encode` gives each group's
  moments too (`z1_mean`, `z1_log_var`, ...), `sample` draws top-down, and
  `decode_top(z_top)` decodes a top-group code with the lower groups at their
  prior means; `group_sizes` is saved with it. A conditional model's take the label too:
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
    # For the tools' likelihood chunks (`likelihood.rows_per_chunk`); 0:
    # unknown, the default chunk.
    self.decoder_floats = tf.Variable(decoder_floats(vae) or 0,
                                      trainable=False, dtype=tf.int64,
                                      name="decoder_floats")
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
    self.decode_top = None
    if vae.hierarchical:
      # The groups' sizes, the top group last, for clients and the tools.
      self.group_sizes = tf.Variable(list(vae.latent_groups),
                                     trainable=False, name="group_sizes")
      self.decode_top = tf.function(self._decode_top, input_signature=[
          tf.TensorSpec([None, vae.top_dim], tf.float32, name="z_top")])

  def _checked(self, labels, rows=None):
    """The labels, once checked to be classes of the model, one per row (or
    one for all, where `rows` is None)."""
    if labels is None:
      return None
    return checks.labels(labels, self._vae.num_classes, rows)

  def _images(self, images, labels):
    """Checked images and labels, at least one row of each (see
    `_at_least_one_row`), and the number of rows the client sent."""
    images = checks.images(images, self._vae.image_shape)
    rows = tf.shape(images)[0]
    labels = self._checked(labels, rows)
    return (_at_least_one_row(images),
            None if labels is None else _at_least_one_row(labels), rows)

  def _encode(self, images, labels=None):
    images, labels, rows = self._images(images, labels)
    z_mean, z_log_var = self._vae.posterior(images, labels)
    outputs = {"z_mean": z_mean, "z_log_var": z_log_var}
    if self._vae.hierarchical:  # Each group's, along the posterior means.
      for index, group in enumerate(self._vae.group_slices(), start=1):
        outputs[f"z{index}_mean"] = z_mean[:, group]
        outputs[f"z{index}_log_var"] = z_log_var[:, group]
    return _first_rows(outputs, rows)

  def _decode_top(self, z_top):
    z_top = checks.latents(z_top, self._vae.top_dim, "z_top")
    return self._decoded(self._vae.complete_from_top(z_top), None,
                         checked=True)

  def _decode(self, z, labels=None):
    z = checks.latents(z, self.latent_dim)
    return self._decoded(z, self._checked(labels, tf.shape(z)[0]),
                         checked=True)

  def _decoded(self, z, labels, checked=False):
    """The decoder's outputs for labels already checked (and, if `checked`,
    logits checked to be finite: for a client's `z`)."""
    logits = self._vae.decoder_logits(z, labels)
    if checked:
      logits = checks.decoded(logits)
    # Logits too: likelihoods (tools/evaluate.py) need them for stability;
    # and the learned per-sub-pixel log-scale, for likelihoods with one.
    outputs = {"images": tf.sigmoid(logits), "logits": logits}
    if self._vae.log_scale is not None:
      outputs["log_scale"] = tf.broadcast_to(self._vae.log_scale,
                                             tf.shape(logits))
    return outputs

  def _reconstruct(self, images, labels=None):
    images, labels, rows = self._images(images, labels)
    return _first_rows(self._decoded(
        self._vae.posterior_mean(images, labels), labels), rows)

  def _sample(self, num, label=None):
    num = checks.count(num)
    labels = None if label is None else tf.fill([num], self._checked(label))
    # Ancestral draws, top group first, for a hierarchical model.
    z = self._vae.prior_sample(tf.random.normal([num, self.latent_dim]))
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
    if self.decode_top is not None:
      signatures["decode_top"] = self.decode_top.get_concrete_function()
    return signatures


def _at_least_one_row(tensor: tf.Tensor) -> tf.Tensor:
  """`tensor` with one row of zeros added where it has none.

  An empty batch is a valid request, but oneDNN's convolution (which
  TensorFlow uses on CPUs with AVX512-VNNI, AVX512-BF16 or AMX, and with
  TF_ENABLE_ONEDNN_OPTS=1) fails on one ("input depth must be evenly
  divisible by filter depth"). A batch with rows gets nothing added, so its
  outputs are what they were.
  """
  missing = tf.maximum(1 - tf.shape(tensor)[0], 0)
  # Rows sliced from a static one keep the tail's static shape, which
  # converters (LiteRT) need.
  filler = tf.zeros([1, *tensor.shape[1:]], tensor.dtype)[:missing]
  return tf.concat([tensor, filler], axis=0)


def _first_rows(outputs: dict, rows: tf.Tensor) -> dict:
  """Each output's first `rows` rows (drops `_at_least_one_row`'s row)."""
  return {name: value[:rows] for name, value in outputs.items()}


def _tf_variables(*keras_models) -> list[tf.Variable]:
  """The `tf.Variable`s under the models' Keras variables, each once."""
  variables = {}
  for model in keras_models:
    for variable in model.weights:
      tf_variable = getattr(variable, "value", variable)
      variables[id(tf_variable)] = tf_variable
  return list(variables.values())
