"""TensorFlow Serving's warm-up requests, written into an export.

A model server replays `assets.extra/tf_serving_warmup_requests` (a TFRecord
of `PredictionLog`s) when it loads a version, before the version takes
traffic, so the first real request of each signature does not pay for its
graph's first run. One request per signature, each a batch of one (zeros for
float inputs, ones for integer ones: `num=1`, `label=1`, a class of every
conditional model).

The records are TF Serving's own protos (`tensorflow-serving-api`, the
`serving` extra). Without that package an export is written without them and
says so.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
from absl import logging

from engine.io import files

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


def example_inputs(signature) -> dict[str, np.ndarray]:
  """One request's inputs for a concrete function: a batch of one."""
  inputs = {}
  # Named specs: positional before saving, keyword arguments once loaded.
  for spec in tf.nest.flatten(signature.structured_input_signature):
    if not isinstance(spec, tf.TensorSpec):
      continue  # An unused optional argument (`labels=None`).
    name = spec.name
    shape = [1 if dim is None else dim for dim in spec.shape.as_list()]
    fill = np.ones if spec.dtype.is_integer else np.zeros
    inputs[name] = fill(shape, spec.dtype.as_numpy_dtype)
  return inputs


def _protos():
  try:
    # pylint: disable=g-import-not-at-top
    from tensorflow_serving.apis import model_pb2
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_log_pb2
  except ImportError:
    return None
  return model_pb2, predict_pb2, prediction_log_pb2


def write(export_dir: str, signatures: dict) -> Optional[str]:
  """Writes one warm-up request per signature under `export_dir`.

  Args:
    export_dir: The version directory (before it is renamed into place).
    signatures: Signature name -> concrete function.

  Returns:
    The file written, or None without `tensorflow-serving-api`.
  """
  protos = _protos()
  if protos is None:
    logging.warning("export without TF Serving warm-up requests: "
                    "pip install 'vae-engine[serving]' to write them")
    return None
  model_pb2, predict_pb2, prediction_log_pb2 = protos
  path = files.join(export_dir, WARMUP_FILE)
  files.gfile.makedirs(files.join(export_dir, "assets.extra"))
  with tf.io.TFRecordWriter(path) as writer:
    for name in sorted(signatures):
      request = predict_pb2.PredictRequest(
          model_spec=model_pb2.ModelSpec(signature_name=name))
      for key, value in example_inputs(signatures[name]).items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
      writer.write(prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(
              request=request)).SerializeToString())
  return path


def read(export_dir: str) -> list[tuple[str, dict[str, np.ndarray]]]:
  """The warm-up requests of an export: (signature name, inputs) each."""
  _, _, prediction_log_pb2 = _protos()
  requests = []
  for record in tf.data.TFRecordDataset(files.join(export_dir, WARMUP_FILE)):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    requests.append((request.model_spec.signature_name, {
        key: tf.make_ndarray(value) for key, value in request.inputs.items()}))
  return requests
