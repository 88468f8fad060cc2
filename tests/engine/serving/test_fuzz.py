"""The fuzz tier of the exported signatures: arbitrary float32 arrays (NaN,
Inf, huge, negative, empty; any rank and width) fed to the trained exports of
the `served` fixture, through `tf.saved_model.load` and through the session
loader fed as TF Serving feeds it. Each call returns finite outputs of the
documented shapes, or an InvalidArgumentError naming the input; the input
decides which, and both runtimes agree.

Reproducible like every randomized test here (tests/conftest.py); the cases
it found are pinned with `@example`.
"""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.engine.serving.exports import TOLERANCE
from tests.engine.serving.runtimes import Session

pytestmark = [pytest.mark.xdist_group("serving"), pytest.mark.e2e]

# The float input of each signature that takes one.
FLOAT_INPUT = {"encode": "images", "decode": "z", "reconstruct": "images",
               "serving_default": "images", "denoise": "images"}
KIND_NAMES = ("conv", "dense", "conditional", "denoising", "colour")


class Loaded:
  """One export in both runtimes, and what its signatures take."""

  def __init__(self, path, vae):
    self.tf2 = tf.saved_model.load(path)
    self.server = Session(path, unshaped=True)
    self.image_shape = tuple(vae.image_shape)
    self.latent_dim = vae.latent_dim
    self.num_classes = vae.num_classes
    self.signatures = sorted(set(FLOAT_INPUT) & set(self.tf2.signatures))

  def tail(self, signature):
    """The shape of one row of the signature's float input."""
    return ((self.latent_dim,) if FLOAT_INPUT[signature] == "z"
            else self.image_shape)


@pytest.fixture(scope="module")
def loaded(served):
  return {name: Loaded(served["exports"][name], served["vaes"][name])
          for name in KIND_NAMES}


_FLOATS = st.one_of(
    st.floats(0, 1, width=32),                       # Pixels as documented.
    st.floats(width=32),                             # Anything finite...
    st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 3e38, -3e38, 1e-45]))


@st.composite
def calls(draw):
  """(kind, signature, float input, labels or None)."""
  name = draw(st.sampled_from(KIND_NAMES))
  signature = draw(st.sampled_from(["encode", "decode", "reconstruct",
                                    "serving_default", "denoise"]))
  rows = draw(st.integers(0, 3))
  shape = draw(st.one_of(
      st.just("right"), st.just("wider"), st.just("flat"),
      hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=3)))
  fill = draw(st.one_of(st.floats(0, 1, width=32), _FLOATS))
  values = draw(st.lists(_FLOATS, max_size=4))
  return name, signature, rows, shape, fill, values


def _array(export, signature, rows, shape, fill, values):
  tail = export.tail(signature)
  if shape == "right":
    shape = (rows, *tail)
  elif shape == "wider":
    shape = (rows, *tail[:-1], tail[-1] + 1)
  elif shape == "flat":
    shape = (rows, int(np.prod(tail)))
  array = np.full(shape, fill, np.float32)
  for i, value in enumerate(values[:array.size]):
    array.flat[(i * 7919) % array.size] = value
  return array


def _refusal(export, signature, x):
  """The message fragment a refusal of `x` must carry, or None: accepted
  (a `z` may still be refused as too large to decode)."""
  name = FLOAT_INPUT[signature]
  if x.ndim == 0 or x.shape[1:] != export.tail(signature):
    return f"{name}: shape "
  if not np.isfinite(x).all():
    return f"{name}: holds NaN or Inf values"
  if name == "images" and x.size and (x.min() < 0 or x.max() > 1):
    return "images: values from "
  return None


def _run(export, signature, inputs):
  """Each runtime's outputs, or its InvalidArgumentError."""
  results = {}
  for runtime in ("tf2", "server"):
    try:
      if runtime == "tf2":
        outputs = export.tf2.signatures[signature](**{
            k: tf.constant(v) for k, v in inputs.items()})
        results[runtime] = {k: v.numpy() for k, v in outputs.items()}
      else:
        results[runtime] = export.server.run(signature, inputs)
    except tf.errors.InvalidArgumentError as e:
      results[runtime] = e
  return results


@settings(max_examples=30, deadline=None)
@given(calls())
@example(("conv", "decode", 2, "wider", 0.0, []))
@example(("dense", "encode", 2, "flat", 0.5, []))
@example(("conditional", "encode", 0, (), 0.5, []))
@example(("colour", "reconstruct", 1, "right", 0.5, [np.nan]))
@example(("conv", "decode", 3, "right", 3e38, [-3e38]))
# Found by CI on a CPU where TensorFlow uses oneDNN (see test_empty_batches).
@example(("conv", "encode", 0, "right", 0.0, []))
def test_a_signature_answers_or_names_its_input(loaded, call):
  name, signature, rows, shape, fill, values = call
  export = loaded[name]
  if signature not in export.signatures:
    signature = "encode"
  x = _array(export, signature, rows, shape, fill, values)
  inputs = {FLOAT_INPUT[signature]: x}
  batch = x.shape[0] if x.ndim else 1
  if export.num_classes:
    inputs["label"] = np.arange(batch, dtype=np.int32) % export.num_classes
  expected = _refusal(export, signature, x)
  results = _run(export, signature, inputs)
  for runtime, result in results.items():
    if isinstance(result, tf.errors.InvalidArgumentError):
      message = result.message
      if expected is None:
        # Only a latent this large that the decoder overflows.
        assert "z: too large" in message, (runtime, message)
      else:
        assert expected in message, (runtime, expected, message)
      continue
    assert expected is None, (runtime, expected, sorted(result))
    rows_out = x.shape[0]
    if signature == "encode":
      shapes = {"z_mean": (rows_out, export.latent_dim),
                "z_log_var": (rows_out, export.latent_dim)}
    else:
      shapes = {"images": (rows_out, *export.image_shape),
                "logits": (rows_out, *export.image_shape)}
      if "log_scale" in result:
        shapes["log_scale"] = (rows_out, *export.image_shape)
    assert {k: v.shape for k, v in result.items()} == shapes, runtime
    for output, value in result.items():
      assert np.isfinite(value).all(), (runtime, output)
    if "images" in result:
      assert 0 <= result["images"].min(initial=0) <= 1
      assert result["images"].max(initial=1) <= 1
  tf2, server = results["tf2"], results["server"]
  assert type(tf2) is type(server)
  if isinstance(tf2, dict):
    for output in tf2:
      np.testing.assert_allclose(server[output], tf2[output], **TOLERANCE)
