"""Exports in the runtimes users serve from, in a fresh process that never
imports the engine: TF2's loader (the reference), the session loader of
TF Serving and `saved_model_cli run` (with the export's warm-up requests and
docs/serving.md's REST requests), and LiteRT."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from engine.serving import warmup
from tests.helpers import REPO_ROOT
from tests.engine.serving.exports import KINDS, TOLERANCE

# One worker builds the exports (the `served` fixture, tests/engine/serving/
# conftest.py) once for every module of this group, not each.
pytestmark = [pytest.mark.xdist_group("serving"), pytest.mark.e2e]


def _signatures(outputs):
  return sorted({key.split("/")[0] for key in outputs
                 if not key.startswith(("rest", "decode_tf2_",
                                        "decode_session_",
                                        "decode_litert_"))})


@pytest.mark.parametrize("runtime", ["session", "litert"])
@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_signature_gives_tf2s_outputs(served, name, runtime):
  ours, reference = (served["outputs"][name, runtime],
                     served["outputs"][name, "tf2"])
  assert served["reports"][name, runtime]["modules"] == []
  expected = {"encode", "decode", "reconstruct", "sample", "serving_default"}
  if name == "denoising":
    expected.add("denoise")
  if name == "hierarchical":
    expected.add("decode_top")
    assert {"encode/z1_mean", "encode/z2_log_var"} <= set(ours)
    # Top-down draws: the top group is N(0, I), the lower one p(z1 | z2).
    assert ours["sample/z"].shape == (5, 6)
  assert set(_signatures(ours)) == expected
  for key, value in ours.items():
    signature, output = key.split("/")
    if signature.startswith("rest"):
      continue
    if signature == "sample":
      assert ours["sample/z"].shape == (5, served["vaes"][name].latent_dim)
      if output == "z":
        continue
      # Random draws differ between runtimes: their images must be what
      # the reference decodes from the runtime's own draws.
      expected_value = reference[f"decode_{runtime}_sample/{output}"]
    else:
      expected_value = reference[key]
    assert value.shape == expected_value.shape, key
    np.testing.assert_allclose(value, expected_value, err_msg=key,
                               **TOLERANCE)
  if name == "colour":
    assert ours["decode/log_scale"].shape == (6, 32, 32, 3)
  if name == "conditional":
    # The labels matter: two labels decode one z differently.
    assert np.abs(ours["decode/images"][0] - ours["decode/images"][1]).max() \
        > 1e-3


@pytest.mark.parametrize("name", sorted(KINDS))
def test_litert_models_hold_every_float32_weight(served, name):
  vae = served["vaes"][name]
  encoder, decoder = vae.count_params()
  # A hierarchical decoder's prior network serves `sample` and `decode_top`
  # only: decoding a whole z needs just p(x | z).
  likelihood = decoder - sum(layer.count_params()
                             for layer in vae.decoder.layers
                             if layer.name.startswith("prior"))
  sizes = served["reports"][name, "litert"]["sizes"]
  weight_bytes = {"encode": encoder, "decode": likelihood, "sample": decoder,
                  "decode_top": decoder,
                  "reconstruct": encoder + likelihood,
                  "serving_default": encoder + likelihood,
                  "denoise": encoder + decoder}
  for signature, size in sizes.items():
    assert size >= 4 * weight_bytes[signature], (signature, size)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_warmup_requests_cover_every_signature_and_replay(served, name):
  requests = warmup.read(served["exports"][name])
  signatures = _signatures(served["outputs"][name, "tf2"])
  assert sorted(signature for signature, _ in requests) == signatures
  replayed = served["reports"][name, "session"]["warmup"]
  assert [signature for signature, _, _ in replayed] == sorted(signatures)
  for signature, shapes, finite in replayed:
    assert finite, signature
    rows = [shape[0] for shape in shapes.values()]
    assert rows and set(rows) == {1}, (signature, shapes)


@pytest.mark.parametrize("name", ["conv", "conditional"])
def test_documented_rest_requests_give_the_signatures_outputs(served, name):
  """Each body docs/serving.md shows, decoded as TF Serving decodes REST
  JSON, fed through the session loader, gives what the signature gives
  those tensors in TF2."""
  bodies = json.loads((served["feeds_dir"] / f"{name}.rest.json").read_text())
  assert {body["signature_name"] for body in bodies} == {
      "encode", "decode", "reconstruct", "sample"}
  outputs = served["outputs"][name, "session"]
  reference = served["outputs"][name, "tf2"]
  vae = served["vaes"][name]
  for i, body in enumerate(bodies):
    signature = body["signature_name"]
    result = {key.split("/")[1]: value for key, value in outputs.items()
              if key.startswith(f"rest{i}/")}
    if signature in ("encode", "reconstruct"):
      # The page's body carries the first test image.
      for key, value in result.items():
        np.testing.assert_allclose(value, reference[f"{signature}/{key}"][:1],
                                   **TOLERANCE)
    elif signature == "decode":
      z = np.array([row["z"] for row in body["instances"]], np.float32)
      labels = [row.get("label") for row in body["instances"]]
      np.testing.assert_allclose(
          result["images"],
          vae.decoder_probabilities(z, labels if vae.conditional else None),
          **TOLERANCE)
    else:
      assert result["images"].shape == (body["inputs"]["num"], 28, 28, 1)
      assert 0 <= result["images"].min() <= result["images"].max() <= 1


def test_saved_model_cli_runs_every_signature(served, tmp_path):
  """The acceptance commands: `saved_model_cli run` (the session loader)."""
  cli = shutil.which("saved_model_cli") or os.path.join(
      os.path.dirname(sys.executable), "saved_model_cli")
  export = served["exports"]["conv"]
  images = tmp_path / "images.npy"
  np.save(images, np.full((2, 28, 28, 1), 0.5, np.float32))
  for signature, inputs in (("sample", ["--input_exprs", "num=4"]),
                            ("decode", ["--input_exprs",
                                        "z=[[0.0, 0.0], [1.0, -1.0]]"]),
                            ("encode", ["--inputs", f"images={images}"]),
                            ("reconstruct", ["--inputs", f"images={images}"])):
    ran = subprocess.run([cli, "run", "--dir", export, "--tag_set", "serve",
                          "--signature_def", signature, *inputs],
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, (signature, ran.stderr[-2000:])
    assert "Result for output key" in ran.stdout, signature


def test_export_tool_writes_litert_models_within_their_bounds(served,
                                                              tmp_path):
  """`tools/export.py --tflite --tflite_quantize=...` on a trained conv
  run: float32 files agree with the SavedModel; quantized decoders stay
  within the bounds docs/serving.md states, on real test images."""
  model_dir = served["root"] / "conv"
  report_path = tmp_path / "tflite.json"
  ran = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "tools", "export.py"),
       f"--model_dir={model_dir}", f"--export_dir={tmp_path}/export",
       "--tflite", "--tflite_quantize=float16,dynamic_int8",
       "--compare_examples=64", f"--output_json={report_path}"],
      capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
  assert ran.returncode == 0, ran.stderr[-3000:]
  report = json.loads(report_path.read_text())
  decoder_bytes = 4 * served["vaes"]["conv"].count_params()[1]
  by_file = {(entry["signature"], entry["variant"]): entry
             for entry in report["files"].values()}
  assert len(by_file) == 5 * 3
  for path, entry in report["files"].items():
    assert os.path.getsize(path) == entry["bytes"]
    assert path.startswith(f"{tmp_path}/export/60/tflite/")
    assert entry["bytes"] > 0
  for signature in ("decode", "sample"):
    float32 = by_file[signature, "float32"]
    assert float32["bytes"] >= decoder_bytes
    assert float32["max_abs_difference"]["images"] <= 1e-5
    assert by_file[signature, "float16"]["max_abs_difference"]["images"] \
        <= FLOAT16_IMAGE_BOUND
    assert by_file[signature, "dynamic_int8"]["max_abs_difference"][
        "images"] <= INT8_IMAGE_BOUND
    # Quantized weights make smaller files.
    assert by_file[signature, "float16"]["bytes"] < float32["bytes"] * 0.6
  assert "decode.dynamic_int8.tflite" in ran.stdout


# The bounds docs/serving.md states for a quantized decoder's pixel means (in
# [0, 1]), max over the test images.
FLOAT16_IMAGE_BOUND = 2e-3
INT8_IMAGE_BOUND = 5e-2
