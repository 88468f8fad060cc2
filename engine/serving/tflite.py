"""LiteRT (TFLite) models of an export's signatures, and running them.

Each signature of a SavedModel is converted on its own with
`TFLiteConverter.from_saved_model`, as a mobile or embedded user would, into
`<version>/tflite/<signature>.tflite` (float32), and optionally
`<signature>.float16.tflite` (weights stored as float16) or
`<signature>.dynamic_int8.tflite` (weights as int8, dynamic-range
quantization). The interpreter is LiteRT's (`ai-edge-litert`, the `serving`
extra), the maintained successor of `tf.lite.Interpreter`.

What LiteRT does differently from TensorFlow: it has no assertion ops, and
the converter drops the signatures' checks of their inputs
(`engine.serving.checks`; select TF ops keep none of them either), so LiteRT
refuses nothing: a NaN or Inf input comes out as non-finite outputs, a
conditional model's label outside [0, classes) decodes as no class at all
(an all-zero one-hot), and a wrong shape fails in the interpreter or gives
outputs of another shape. Check inputs in the app.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from engine.io import files
from engine.errors import UserError

VARIANTS = ("float32", "float16", "dynamic_int8")
DIRECTORY = "tflite"


def file_name(signature: str, variant: str = "float32") -> str:
  """`decode.tflite`, `decode.float16.tflite`, `decode.dynamic_int8.tflite`."""
  return (f"{signature}.tflite" if variant == "float32" else
          f"{signature}.{variant}.tflite")


def convert(saved_model_dir: str, signature: str,
            variant: str = "float32") -> bytes:
  """One signature of a SavedModel as a LiteRT flatbuffer.

  Args:
    saved_model_dir: An export's version directory.
    signature: The signature to convert.
    variant: One of `VARIANTS`.
  """
  if variant not in VARIANTS:
    raise ValueError(f"unknown TFLite variant {variant!r}; one of {VARIANTS}")
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model_dir, signature_keys=[signature])
  if variant != "float32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if variant == "float16":
    converter.target_spec.supported_types = [tf.float16]
  return converter.convert()


def write(saved_model_dir: str, signatures: Sequence[str],
          variants: Sequence[str] = ("float32",)) -> dict:
  """Converts and writes each signature in each variant.

  Returns:
    (signature, variant) -> the file written under `<saved_model_dir>/tflite`.
  """
  directory = files.join(saved_model_dir, DIRECTORY)
  files.gfile.makedirs(directory)
  written = {}
  for signature in signatures:
    for variant in variants:
      path = files.join(directory, file_name(signature, variant))
      files.write_atomically(path, convert(saved_model_dir, signature,
                                           variant))
      written[signature, variant] = path
  return written


def interpreter(model: bytes | str):
  """A LiteRT interpreter of a flatbuffer or a `.tflite` path.

  Raises:
    UserError: If `ai-edge-litert` is not installed.
  """
  try:
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError("running TFLite models needs LiteRT: pip install "
                    "'vae-engine[serving]' (ai-edge-litert)") from None
  if isinstance(model, str):
    with files.gfile.GFile(model, "rb") as f:
      model = f.read()
  return Interpreter(model_content=model)


def run(model: bytes | str, signature: str, **inputs) -> dict:
  """Runs one signature of a LiteRT model on numpy inputs (any batch size:
  the signature runner resizes the inputs)."""
  runner = interpreter(model).get_signature_runner(signature)
  return runner(**{name: np.asarray(value) for name, value in inputs.items()})


def reference_inputs(exported, images: np.ndarray,
                     labels: Optional[np.ndarray] = None) -> dict:
  """Each signature's inputs for comparing runtimes on real images: the
  images (and labels); for `decode`, their posterior means; for `sample`,
  as many draws of the first image's label.

  Args:
    exported: The SavedModel (`engine.serving.loaded.Exported`).
    images: Float32 test images in [0, 1], [N, H, W, C].
    labels: Their int labels [N] (conditional models only).
  """
  conditional = exported.num_classes > 0
  with_labels = {"label": labels.astype(np.int32)} if conditional else {}
  z = exported.encode(images, labels)["z_mean"].numpy()
  inputs = {"decode": {"z": z, **with_labels},
            "decode_top": {"z_top": z[:, exported.latent_dim
                                      - exported.group_sizes[-1]:]},
            "sample": {"num": np.array(len(images), np.int32),
                       **({"label": np.array(labels[0], np.int32)}
                          if conditional else {})}}
  for signature in exported.loaded.signatures:
    if signature not in inputs:
      inputs[signature] = {"images": images, **with_labels}
  return inputs


def max_differences(exported, model: bytes | str, signature: str,
                    inputs: dict) -> dict[str, float]:
  """Max |LiteRT - SavedModel| of each output of one signature.

  `sample` draws differ between runtimes, so LiteRT's images are compared
  with the SavedModel's decoding of LiteRT's own draws (`z`).
  """
  ours = run(model, signature, **inputs)
  if signature == "sample":
    label = inputs.get("label")
    labels = None if label is None else np.full(len(ours["z"]), label)
    theirs = exported.decode(ours["z"], labels)
    ours = {k: v for k, v in ours.items() if k != "z"}
  else:
    theirs = exported.loaded.signatures[signature](**{
        k: tf.constant(v) for k, v in inputs.items()})
  return {name: float(np.max(np.abs(value - theirs[name].numpy())))
          for name, value in sorted(ours.items())}
