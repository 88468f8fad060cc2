"""An empty batch is a valid request: every signature of every kind of
export answers it with outputs of zero rows, with oneDNN's kernels (the
default on CPUs with AVX512-VNNI, AVX512-BF16 or AMX, where a convolution
fails on an empty batch) and without them, whatever CPU runs the test."""

import json
import os

import pytest

from tests.engine.serving.exports import KINDS, fresh_process

pytestmark = [pytest.mark.xdist_group("serving"), pytest.mark.e2e]

SCRIPT = os.path.join(os.path.dirname(__file__), "empty_batches.py")


@pytest.mark.parametrize("onednn", ["1", "0"])
def test_every_signature_answers_an_empty_batch(served, onednn, tmp_path):
  process = fresh_process(
      SCRIPT, json.dumps({name: served["exports"][name] for name in KINDS}),
      cwd=tmp_path, env={"TF_ENABLE_ONEDNN_OPTS": onednn})
  assert process.returncode == 0, process.stderr[-3000:]
  reports = json.loads(process.stdout.splitlines()[-1])
  assert set(reports) == set(KINDS)
  for name, report in reports.items():
    vae = served["vaes"][name]
    assert {key.split("/")[0] for key in report} >= {
        "encode", "decode", "reconstruct", "serving_default", "sample"}
    for call, outputs in report.items():
      assert isinstance(outputs, dict), (name, call, outputs)
      for output, shape in outputs.items():
        tail = ([vae.latent_dim] if output.startswith("z_") or output == "z"
                else None if output.startswith("z") else
                list(vae.image_shape))
        assert shape[0] == 0, (name, call, output, shape)
        if tail is not None:
          assert shape[1:] == tail, (name, call, output, shape)
