"""Runs an export's signatures in serving runtimes, as their users do.

    python runtimes.py RUNTIME[,RUNTIME...] EXPORTS_JSON FEEDS_DIR OUT_DIR

Started by the tests in a fresh process that imports only TensorFlow, numpy,
LiteRT and TF Serving's protos, never the engine; the runtimes run in the
order given. Each RUNTIME is

* `tf2`: `tf.saved_model.load`, the reference. Also decodes the `z` that
  the other runtimes' `sample` returned (OUT_DIR/<name>.<runtime>.npz), so
  random samples can be compared too.
* `session`: the session-based loader of `saved_model_cli run` and TF
  Serving; also replays the export's warm-up requests and the REST requests
  in FEEDS_DIR/<name>.rest.json, decoded as TF Serving's REST API decodes
  them.
* `litert`: each signature converted with `TFLiteConverter.from_saved_model`
  and run by LiteRT's interpreter; records each flatbuffer's size.

EXPORTS_JSON maps a name to an export directory; FEEDS_DIR/<name>.npz holds
the inputs of each signature, keyed `<signature>/<input>`. Outputs go to
OUT_DIR/<name>.<runtime>.npz keyed `<signature>/<output>`, plus
OUT_DIR/<name>.<runtime>.json for sizes and counts.

Bad inputs too: FEEDS_DIR/<name>.bad.npz holds cases keyed `<case>/<input>`
and <name>.bad.json each case's signature; what each runtime made of each
(an error's type and message, or its outputs' shapes and finiteness) goes to
the report's "bad" (the session runtime's twice: "bad" as
`saved_model_cli run` feeds a session, with Python's check of the fed
shapes, and "bad_server" as TF Serving's C++ server does, without it).
"""

import gc
import json
import os
import sys

import numpy as np
import tensorflow as tf


def feeds_by_signature(path):
  feeds = {}
  with np.load(path) as archive:
    for key in archive.files:
      signature, name = key.split("/")
      feeds.setdefault(signature, {})[name] = archive[key]
  return feeds


def flat(outputs_by_signature):
  return {f"{signature}/{name}": np.asarray(value)
          for signature, outputs in outputs_by_signature.items()
          for name, value in outputs.items()}


def run_tf2(export, feeds, feeds_dir, out_dir, name):
  loaded = tf.saved_model.load(export)
  outputs = {signature: {k: v.numpy() for k, v in loaded.signatures[
      signature](**{k: tf.constant(v) for k, v in inputs.items()}).items()}
             for signature, inputs in feeds.items()}
  label = feeds["sample"].get("label")
  for runtime in ("session", "litert"):
    path = os.path.join(out_dir, f"{name}.{runtime}.npz")
    if not os.path.exists(path):
      continue
    with np.load(path) as theirs:
      z = theirs["sample/z"]
    inputs = {"z": tf.constant(z)}
    if label is not None:
      inputs["label"] = tf.fill([len(z)], tf.constant(label))
    outputs[f"decode_{runtime}_sample"] = {
        k: v.numpy() for k, v in loaded.signatures["decode"](**inputs).items()}

  def call(signature, **inputs):
    return {k: v.numpy() for k, v in loaded.signatures[signature](**{
        k: tf.constant(v) for k, v in inputs.items()}).items()}
  return outputs, {"bad": bad_outcomes(feeds_dir, name, call)}


def outcome(call, inputs):
  """What one call made of (bad) inputs: the error, or the outputs."""
  try:
    outputs = call(**inputs)
  except Exception as e:  # pylint: disable=broad-except  # Recorded.
    return {"error": type(e).__name__, "message": str(e)}
  return {"outputs": {k: [list(np.shape(v)), bool(np.isfinite(v).all())]
                      for k, v in outputs.items()}}


def bad_outcomes(feeds_dir, name, call):
  """What `call(signature, **inputs)` made of each bad case of `name`."""
  path = os.path.join(feeds_dir, f"{name}.bad.json")
  with open(path) as f:
    signatures = json.load(f)
  cases = feeds_by_signature(os.path.join(feeds_dir, f"{name}.bad.npz"))
  return {case: outcome(lambda **inputs: call(signatures[case], **inputs),
                        inputs) for case, inputs in sorted(cases.items())}


class Session:
  """An export loaded by the TF1 session loader, run by signature name.

  `unshaped`: each signature input is fed through a placeholder of unknown
  shape, as TF Serving's C++ server feeds the graph (a Python session
  refuses a shape its placeholder does not allow before the graph runs).
  """

  def __init__(self, export, unshaped=False):
    self.session = tf.compat.v1.Session(graph=tf.Graph())
    self.feeds = {}
    with self.session.graph.as_default():
      input_map = None
      if unshaped:
        from tensorflow.core.protobuf import saved_model_pb2
        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(export, "saved_model.pb"), "rb") as f:
          saved.ParseFromString(f.read())
        input_map = {
            info.name: tf.compat.v1.placeholder(
                tf.dtypes.as_dtype(info.dtype), shape=None)
            for definition in saved.meta_graphs[0].signature_def.values()
            for info in definition.inputs.values()}
        self.feeds = input_map
      self.meta_graph = tf.compat.v1.saved_model.loader.load(
          self.session, [tf.saved_model.SERVING], export,
          **({"input_map": input_map} if unshaped else {}))

  def run(self, signature, inputs):
    definition = self.meta_graph.signature_def[signature]
    fetches = {k: v.name for k, v in definition.outputs.items()}
    names = {k: definition.inputs[k].name for k in inputs}
    return self.session.run(fetches, {
        self.feeds.get(names[k], names[k]): v for k, v in inputs.items()})

  def input_dtypes(self, signature):
    definition = self.meta_graph.signature_def[signature]
    return {k: tf.dtypes.as_dtype(v.dtype).as_numpy_dtype
            for k, v in definition.inputs.items()}


def rest_inputs(request, dtypes):
  """A REST body's tensors, as TF Serving decodes them: `instances` (row
  format: one object per example, stacked) or `inputs` (columnar)."""
  if "instances" in request:
    rows = request["instances"]
    columns = {k: np.stack([np.asarray(row[k]) for row in rows])
               for k in rows[0]}
  else:
    columns = {k: np.asarray(v) for k, v in request["inputs"].items()}
  return {k: v.astype(dtypes[k]) for k, v in columns.items()}


def run_session(export, feeds, feeds_dir, name):
  from tensorflow_serving.apis import prediction_log_pb2

  session = Session(export)
  outputs = {signature: session.run(signature, inputs)
             for signature, inputs in feeds.items()}
  warmup = os.path.join(export, "assets.extra", "tf_serving_warmup_requests")
  replayed = []
  for record in tf.compat.v1.io.tf_record_iterator(warmup):
    request = prediction_log_pb2.PredictionLog.FromString(
        record).predict_log.request
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    result = session.run(request.model_spec.signature_name, inputs)
    replayed.append([request.model_spec.signature_name,
                     {k: list(v.shape) for k, v in result.items()},
                     all(bool(np.isfinite(v).all()) for v in result.values())])
  rest_path = os.path.join(feeds_dir, f"{name}.rest.json")
  if os.path.exists(rest_path):
    with open(rest_path) as f:
      requests = json.load(f)
    for i, request in enumerate(requests):
      signature = request.get("signature_name", "serving_default")
      result = session.run(signature, rest_inputs(
          request, session.input_dtypes(signature)))
      outputs[f"rest{i}"] = result
  server = Session(export, unshaped=True)
  return outputs, {
      "warmup": replayed,
      "bad": bad_outcomes(feeds_dir, name, lambda signature, **inputs:
                          session.run(signature, inputs)),
      "bad_server": bad_outcomes(feeds_dir, name, lambda signature, **inputs:
                                 server.run(signature, inputs))}


def run_litert(export, feeds, feeds_dir, name):
  from ai_edge_litert.interpreter import Interpreter

  outputs, sizes, flatbuffers = {}, {}, {}
  for signature, inputs in feeds.items():
    # The converter collects garbage after each load. What is alive now
    # (TensorFlow, the earlier runtimes and loads) is not garbage, and
    # walking it again after every conversion adds up: frozen, it is
    # left out of those collections.
    gc.freeze()
    converter = tf.lite.TFLiteConverter.from_saved_model(
        export, signature_keys=[signature])
    flatbuffers[signature] = converter.convert()
    sizes[signature] = len(flatbuffers[signature])
    runner = Interpreter(model_content=flatbuffers[signature]
                         ).get_signature_runner(signature)
    outputs[signature] = runner(**inputs)

  def call(signature, **inputs):
    return Interpreter(model_content=flatbuffers[signature]
                       ).get_signature_runner(signature)(**inputs)
  return outputs, {"sizes": sizes,
                   "bad": bad_outcomes(feeds_dir, name, call)}


def main(runtimes, exports_json, feeds_dir, out_dir):
  for runtime in runtimes.split(","):
    for name, export in json.loads(exports_json).items():
      feeds = feeds_by_signature(os.path.join(feeds_dir, f"{name}.npz"))
      if runtime == "tf2":
        outputs, report = run_tf2(export, feeds, feeds_dir, out_dir, name)
      elif runtime == "session":
        outputs, report = run_session(export, feeds, feeds_dir, name)
      elif runtime == "litert":
        outputs, report = run_litert(export, feeds, feeds_dir, name)
      else:
        raise ValueError(f"unknown runtime {runtime!r}")
      report["modules"] = sorted(m for m in sys.modules
                                 if m.split(".")[0] in ("engine", "models"))
      np.savez(os.path.join(out_dir, f"{name}.{runtime}.npz"),
               **flat(outputs))
      with open(os.path.join(out_dir, f"{name}.{runtime}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
