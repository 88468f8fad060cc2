"""The exported signatures refuse bad inputs by name (engine/serving/checks.py),
in every runtime that executes the graph, in a fresh process that never
imports the engine; for good inputs their outputs are the unchecked ones; and
LiteRT, whose converter drops the checks, does what the README says."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from engine.serving import checks, signatures
from tests.engine.serving.exports import KINDS

pytestmark = [pytest.mark.xdist_group("serving"), pytest.mark.e2e]

# Cases whose shape the placeholder does not allow: a Python session
# (`saved_model_cli run`) refuses them itself, before the graph runs.
CLIENT_SIDE = {"decode.z.width", "encode.images.shape"}


def _first_line(message):
  """The line of an error that says what was wrong."""
  lines = [line for line in message.splitlines()
           if "assertion failed" in line or "Cannot feed" in line]
  return lines[0] if lines else message


@pytest.mark.parametrize("runtime", ["tf2", "session", "server"])
@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_bad_input_is_refused_by_name(served, name, runtime):
  """tf2: `tf.saved_model.load`; session: the session loader fed as
  `saved_model_cli run` feeds it; server: fed as TF Serving's C++ server
  feeds it (no client-side shape check)."""
  report = served["reports"][name, "tf2" if runtime == "tf2" else "session"]
  outcomes = report["bad_server" if runtime == "server" else "bad"]
  cases = served["bad"][name]
  assert sorted(outcomes) == sorted(cases)
  for case, (signature, _, refused, fragment) in cases.items():
    outcome = outcomes[case]
    assert "error" in outcome, (case, outcome)
    message = _first_line(outcome["message"])
    if runtime == "session" and case in CLIENT_SIDE:
      assert outcome["error"] == "ValueError", (case, message)
      assert f"for Tensor {signature}_{refused}:0" in message, (case, message)
      continue
    assert outcome["error"] == "InvalidArgumentError", (case, message)
    assert f"[{refused}: " in message and fragment in message, (case, message)


def test_every_float_input_is_checked_for_nan_and_inf(served):
  """The cases cover each float input of each signature of each kind."""
  for name, cases in served["bad"].items():
    float_inputs = {(signature, key) for signature, inputs, _, _ in
                    cases.values() for key, value in inputs.items()
                    if value.dtype == np.float32}
    for signature, key in float_inputs:
      for kind in ("nan", "inf", "-inf"):
        assert f"{signature}.{key}.{kind}" in cases, (name, signature, key)
    signatures_with_floats = {signature for signature, _ in float_inputs}
    expected = {"encode", "decode", "reconstruct", "serving_default"}
    assert signatures_with_floats == expected | (
        {"denoise"} if name == "denoising" else set()) | (
            {"decode_top"} if name == "hierarchical" else set())


@pytest.mark.parametrize("name", sorted(KINDS))
def test_litert_runs_bad_inputs_unchecked(served, name):
  """What the README says of LiteRT: the converter drops the checks, so
  nothing is refused by name; a NaN or Inf input comes back as non-finite
  outputs, never as finite ones that look like an answer."""
  outcomes = served["reports"][name, "litert"]["bad"]
  # tanh saturates: an Inf pixel gives finite outputs (the README says so).
  saturating = name == "hierarchical"
  for case, (signature, _, _, fragment) in served["bad"][name].items():
    outcome = outcomes[case]
    if saturating and case.endswith("inf"):
      assert "outputs" in outcome, (case, outcome)
    elif fragment == "holds NaN or Inf values":
      assert "outputs" in outcome, (case, outcome)
      finite = {output: ok for output, (_, ok) in outcome["outputs"].items()}
      learned = {"log_scale"}  # The model's own, whatever the input.
      assert not any(ok for output, ok in finite.items()
                     if output not in learned), (case, finite)
    else:
      assert "[" + fragment not in outcome.get("message", ""), case


@pytest.mark.parametrize("name", sorted(KINDS))
def test_good_inputs_give_the_unchecked_outputs_bit_for_bit(served, name):
  """The checks change no output: each signature traced with and without
  them gives the same bits on the fixture's inputs."""
  vae = served["vaes"][name]
  feeds = dict(np.load(served["feeds_dir"] / f"{name}.npz"))
  checked = signatures.ServingModule(vae, denoising=name == "denoising")
  with pytest.MonkeyPatch.context() as patch:
    for check in ("images", "latents", "decoded", "labels", "count"):
      patch.setattr(checks, check, lambda x, *args: x)
    unchecked = signatures.ServingModule(vae, denoising=name == "denoising")
    functions = unchecked.signatures()
  compared = 0
  for signature, function in checked.signatures().items():
    if signature == "sample":  # Random draws; `decode` decodes them.
      continue
    inputs = {key.split("/")[1]: tf.constant(value)
              for key, value in feeds.items()
              if key.startswith(signature + "/")}
    ours, theirs = function(**inputs), functions[signature](**inputs)
    assert sorted(ours) == sorted(theirs)
    for output in ours:
      np.testing.assert_array_equal(ours[output], theirs[output],
                                    err_msg=f"{signature}/{output}")
      compared += 1
  assert compared >= 8


def test_saved_model_cli_names_a_nan_input(served, tmp_path):
  """`saved_model_cli run` (the session loader) on a NaN and a wrong width."""
  cli = shutil.which("saved_model_cli") or os.path.join(
      os.path.dirname(sys.executable), "saved_model_cli")
  z = np.zeros((2, 2), np.float32)
  z[1, 0] = np.nan
  np.save(tmp_path / "nan.npy", z)
  np.save(tmp_path / "wide.npy", np.zeros((2, 3), np.float32))
  for inputs, expected in (
      ("nan.npy", "z: holds NaN or Inf values; send finite latents"),
      ("wide.npy", "Cannot feed value of shape (2, 3) for Tensor decode_z:0, "
                   "which has shape (None, 2)")):
    ran = subprocess.run(
        [cli, "run", "--dir", served["exports"]["conv"], "--tag_set",
         "serve", "--signature_def", "decode", "--inputs",
         f"z={tmp_path / inputs}"], capture_output=True, text=True,
        timeout=300)
    assert ran.returncode != 0, inputs
    assert expected in ran.stderr, (inputs, ran.stderr[-2000:])
    assert "Result for output key" not in ran.stdout


def test_select_tf_ops_keep_no_check_either(served):
  """The README's word: converted with select TF ops too, LiteRT still
  refuses no NaN (the converter drops `Assert`, it is not a select op)."""
  from engine.serving import tflite
  converter = tf.lite.TFLiteConverter.from_saved_model(
      served["exports"]["conv"], signature_keys=["decode"])
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                         tf.lite.OpsSet.SELECT_TF_OPS]
  flatbuffer = converter.convert()
  outputs = tflite.run(flatbuffer, "decode",
                       z=np.full((2, 2), np.nan, np.float32))
  assert not np.isfinite(outputs["logits"]).all()
  assert len(flatbuffer) <= served["reports"]["conv", "litert"]["sizes"][
      "decode"] + 64  # No op added for the checks.


def test_the_server_names_the_shape_whatever_order_ops_run_in(tmp_path):
  """The session loader runs ops that do not depend on each other in any
  order: a later check's reduction must neither fail on a wrong-rank input
  (it used to, with `Invalid reduction dimension`, when it ran before the
  shape check) nor be reached before the shape check passed."""

  class Checked(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 1], tf.float32)])
    def images(self, x):
      return {"out": checks.images(x, [4, 4, 1]) * 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def labels(self, x):
      return {"out": checks.labels(x, 3, rows=tf.shape(x)[0]) + 0}

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
    def count(self, num):
      return {"out": tf.zeros([checks.count(num)])}

  module = Checked()
  path = str(tmp_path / "checked")
  tf.saved_model.save(module, path, signatures={
      "images": module.images, "labels": module.labels,
      "count": module.count})
  from tests.engine.serving.runtimes import Session
  server = Session(path, unshaped=True)
  for _ in range(25):
    for shape in [(), (2,), (2, 16), (2, 4, 4), (2, 4, 4, 1, 1), (0, 5)]:
      with pytest.raises(tf.errors.InvalidArgumentError,
                         match=r"images: shape \[") as refused:
        server.run("images", {"x": np.full(shape, np.nan, np.float32)})
      assert "reduction" not in refused.value.message
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"label: shape"):
      server.run("labels", {"x": np.full((2, 2), 7, np.int32)})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"num: shape"):
      server.run("count", {"num": np.array([1, 2], np.int32)})
  np.testing.assert_array_equal(
      server.run("images", {"x": np.ones((1, 4, 4, 1), np.float32)})["out"],
      np.full((1, 4, 4, 1), 2.0, np.float32))
