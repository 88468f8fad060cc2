"""Calls every signature of an export with an empty batch, in TF2 and in the
session loader, and prints what came back as JSON.

    python empty_batches.py EXPORTS_JSON

Run by tests/engine/serving/test_empty_batches.py in a fresh process that
imports only TensorFlow and numpy (the test picks TF_ENABLE_ONEDNN_OPTS).
EXPORTS_JSON maps a name to an export directory; the report maps each name
to its `signature/runtime` outcomes.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runtimes import Session  # noqa: E402


def empty_feed(function):
  """Zero rows of each batched input; a scalar input (`num`) is 0."""
  feed = {}
  for name, spec in function.structured_input_signature[1].items():
    shape = ([] if spec.shape.rank == 0
             else [0, *spec.shape.as_list()[1:]])
    feed[name] = np.zeros(shape, spec.dtype.as_numpy_dtype)
  return feed


def calls(export):
  """`signature/runtime` -> the outputs' shapes, or the error's last line."""
  loaded = tf.saved_model.load(export)
  session = Session(export)
  report = {}
  for signature, function in sorted(loaded.signatures.items()):
    feed = empty_feed(function)
    for runtime in ("tf2", "session"):
      try:
        if runtime == "tf2":
          outputs = {k: v.numpy() for k, v in function(**{
              k: tf.constant(v) for k, v in feed.items()}).items()}
        else:
          outputs = session.run(signature, feed)
        report[f"{signature}/{runtime}"] = {
            k: list(v.shape) for k, v in outputs.items()}
      except tf.errors.OpError as e:
        report[f"{signature}/{runtime}"] = e.message.splitlines()[-1]
  return report


if __name__ == "__main__":
  print(json.dumps({name: calls(export) for name, export in json.loads(
      sys.argv[1]).items()}))
