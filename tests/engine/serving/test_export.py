"""SavedModel export: every model, loaded by code that never imports ours."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import models
from engine.serving import export
from engine.serving.loaded import Exported
from models import base

pytestmark = pytest.mark.e2e

_LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf
results = {}
for name, path in json.loads(sys.argv[1]).items():
  loaded = tf.saved_model.load(path)
  images = np.load(sys.argv[2])
  out = {}
  for signature, fn in loaded.signatures.items():
    if signature in ("encode", "reconstruct", "serving_default", "denoise"):
      result = fn(images=tf.constant(images))
    elif signature == "decode":
      result = fn(z=tf.zeros([3, json.loads(sys.argv[3])[name]]))
    elif signature == "sample":
      result = fn(num=tf.constant(5))
    out[signature] = {k: [list(v.shape), v.dtype.name, float(tf.reduce_min(v)),
                          float(tf.reduce_max(v))] for k, v in result.items()}
  out["z_mean"] = loaded.signatures["encode"](
      images=tf.constant(images))["z_mean"].numpy().tolist()
  results[name] = out
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  root = tmp_path_factory.mktemp("exports")
  built, paths = {}, {}
  for name in models.names():
    spec = models.get(name)
    vae = spec.build((28, 28, 1), spec.default_latent_dim)
    built[name] = vae
    paths[name] = export.export(vae, str(root / name), version=7,
                                denoising=name == "denoising")
  return built, paths


def test_layout_is_versioned_and_complete(exports):
  _, paths = exports
  for path in paths.values():
    assert os.path.basename(path) == "7"
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert not [p for p in os.listdir(os.path.dirname(path))
                if p.startswith(".")]


def test_fresh_process_calls_every_signature(exports, tmp_path, mnist):
  built, paths = exports
  images = (mnist.test_images[:3] / 255.0).astype(np.float32)
  np.save(tmp_path / "images.npy", images)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run(
      [sys.executable, "-c", _LOADER, json.dumps(paths),
       str(tmp_path / "images.npy"),
       json.dumps({name: vae.latent_dim for name, vae in built.items()})],
      capture_output=True, text=True, cwd=str(tmp_path), env=env, check=True)
  outputs = json.loads(result.stdout.strip().splitlines()[-1])
  for name, out in outputs.items():
    expected = {"encode", "decode", "reconstruct", "sample", "serving_default"}
    if name == "denoising":
      expected.add("denoise")
    assert expected <= set(out), name
    latent = built[name].latent_dim
    assert out["encode"]["z_mean"][:2] == [[3, latent], "float32"]
    assert out["encode"]["z_log_var"][:2] == [[3, latent], "float32"]
    for signature, count in (("decode", 3), ("reconstruct", 3),
                             ("sample", 5), ("serving_default", 3)):
      shape, dtype, low, high = out[signature]["images"]
      assert shape == [count, 28, 28, 1] and dtype == "float32"
      assert 0.0 <= low <= high <= 1.0, (name, signature)
      assert out[signature]["logits"][:2] == [[count, 28, 28, 1], "float32"]
    in_process = built[name].encoder([images, np.zeros((3, latent),
                                                       np.float32)])[0]
    np.testing.assert_allclose(out["z_mean"], in_process, rtol=1e-5,
                               atol=1e-6)


def test_an_export_carries_its_decoders_size_for_the_likelihood(exports):
  """`vae-engine evaluate --saved_model` sizes its NLL chunks as for the
  checkpoint (the same chunks, the same noise, the same estimate)."""
  built, paths = exports
  for name, path in paths.items():
    floats = Exported.load(path).decoder_floats
    assert floats == base.decoder_floats(built[name]) > 0, name


def test_saved_model_cli_lists_the_signatures(exports):
  _, paths = exports
  cli = shutil.which("saved_model_cli") or os.path.join(
      os.path.dirname(sys.executable), "saved_model_cli")
  result = subprocess.run([cli, "show", "--dir", paths["denoising"], "--all"],
                          capture_output=True, text=True, check=True)
  for signature in ("encode", "decode", "reconstruct", "sample",
                    "serving_default", "denoise"):
    assert f"signature_def['{signature}']" in result.stdout


def test_re_export_replaces_a_version_only_when_complete(tmp_path):
  vae = models.get("dense").build((28, 28, 1), 2)
  first = export.export(vae, str(tmp_path), version=3)
  marker = os.path.join(first, "marker")
  open(marker, "w").close()
  again = export.export(vae, str(tmp_path), version=3)
  assert again == first and not os.path.exists(marker)
  assert sorted(os.listdir(tmp_path)) == ["3"]


def test_failed_export_leaves_no_directory(tmp_path, monkeypatch):
  vae = models.get("dense").build((28, 28, 1), 2)
  previous = export.export(vae, str(tmp_path), version=1)

  def explode(*args, **kwargs):
    raise RuntimeError("disk full")
  monkeypatch.setattr(tf.saved_model, "save", explode)
  with pytest.raises(RuntimeError, match="disk full"):
    export.export(vae, str(tmp_path), version=2)
  assert sorted(os.listdir(tmp_path)) == ["1"]
  assert os.path.exists(os.path.join(previous, "saved_model.pb"))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_models_export_float32(tmp_path, policy):
  """A model trained under a mixed policy exports a float32 computation of
  its weights: float32 outputs, equal to the same weights computing in
  float32, and convertible to LiteRT (which has no bfloat16 kernels)."""
  from engine.devices import precision
  from engine.serving import tflite
  with precision.policy_scope(policy):
    vae = models.get("conv").create((28, 28, 1), 2, num_classes=3)
  path = export.export(vae, str(tmp_path), 1)
  loaded = tf.saved_model.load(path)
  images = tf.random.uniform([2, 28, 28, 1], seed=1)
  labels = tf.constant([0, 2])
  for name, outputs in (("encode", loaded.signatures["encode"](
      images=images, label=labels)), ("reconstruct", loaded.signatures[
          "reconstruct"](images=images, label=labels))):
    for value in outputs.values():
      assert value.dtype == tf.float32, name
      assert np.isfinite(value.numpy()).all(), name
  twin = export.float32_model(vae)
  assert twin is not vae and twin.encoder.compute_dtype == "float32"
  np.testing.assert_allclose(
      loaded.signatures["encode"](images=images, label=labels)["z_mean"],
      twin.posterior_mean(images, labels), rtol=1e-5, atol=1e-6)
  z = np.ones((2, 2), np.float32)
  on_litert = tflite.run(tflite.convert(path, "decode"), "decode", z=z,
                         label=np.array([1, 2], np.int32))
  np.testing.assert_allclose(on_litert["images"],
                             twin.decoder_probabilities(z, [1, 2]),
                             rtol=1e-5, atol=1e-5)


def test_a_float32_model_exports_as_it_is():
  vae = models.get("dense").build((28, 28, 1), 2)
  assert export.float32_model(vae) is vae


_CONDITIONAL_LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
report = {"inputs": {name: sorted(fn.structured_input_signature[1])
                     for name, fn in loaded.signatures.items()},
          "num_classes": int(loaded.num_classes.numpy())}
samples = [loaded.signatures["sample"](num=tf.constant(100),
                                       label=tf.constant(label))["images"]
           for label in range(10)]
np.save(sys.argv[2], np.concatenate(samples))
z = tf.random.normal([10, 2])
decoded = loaded.decode(z, tf.range(10))["images"].numpy()
report["decode_rows_differ"] = float(np.abs(decoded[0] - decoded[1]).max())
try:
  loaded.signatures["sample"](num=tf.constant(2), label=tf.constant(10))
  report["bad_label"] = "accepted"
except tf.errors.InvalidArgumentError:
  report["bad_label"] = "refused"
report["our_modules"] = sorted(m for m in sys.modules
                               if m.split(".")[0] in ("engine", "models"))
print(json.dumps(report))
"""


# With the other users of `mnist_classifier_dir` (test_sample_quality), on
# the one worker that trains it.
@pytest.mark.xdist_group("mnist_classifier")
def test_conditional_export_samples_the_asked_class_in_a_fresh_process(
    mnist_dir, mnist, mnist_classifier_dir, tmp_path):
  """A conditional conv VAE trained for 300 steps: its exported
  `sample(num, label)`, called by a process that imports only tensorflow
  and numpy, draws digits the scoring classifier reads as that label."""
  import io
  # The run scores its samples with the shared classifier (cached in the
  # run directory), instead of training one on all 60,000 images.
  shutil.copytree(os.path.join(mnist_classifier_dir, "classifier"),
                  tmp_path / "run" / "classifier")

  from engine.run import runner
  from engine.eval import sample_quality
  from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig

  result = runner.run(RunConfig(
      data=DataConfig(data_dir=mnist_dir),
      model=ModelConfig(name="conv", latent_dim=2, conditional=True),
      train=TrainConfig(model_dir=str(tmp_path / "run"), batch_size=128,
                        train_steps=300, steps_per_loop=100, log_every=100,
                        checkpoint_every=0, figures=False,
                        sample_quality=True,
                        export_dir=str(tmp_path / "export"))), io.StringIO())
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  loaded = subprocess.run(
      [sys.executable, "-c", _CONDITIONAL_LOADER, result.export_path,
       str(tmp_path / "samples.npy")],
      capture_output=True, text=True, cwd=str(tmp_path), env=env, check=True)
  report = json.loads(loaded.stdout.strip().splitlines()[-1])
  assert report["num_classes"] == 10 and report["our_modules"] == []
  assert report["inputs"]["sample"] == ["label", "num"]
  assert report["inputs"]["decode"] == ["label", "z"]
  assert report["inputs"]["encode"] == ["images", "label"]
  assert report["bad_label"] == "refused"
  assert report["decode_rows_differ"] > 0.1
  classifier = sample_quality.load_or_train(
      str(tmp_path / "run"), mnist.train_images[:10], mnist.train_labels[:10],
      mnist.test_images[:10], mnist.test_labels[:10])
  assert classifier.test_accuracy >= 0.9  # The cached one (chance: 0.1).
  predicted = np.argmax(classifier.probabilities(
      np.load(tmp_path / "samples.npy")), axis=1).reshape(10, 100)
  per_class = (predicted == np.arange(10)[:, None]).mean(axis=1)
  # Measured 0.96+ on every class (AMD EPYC Zen 3); the run's own score
  # agrees (0.999).
  assert per_class.mean() >= 0.9 and per_class.min() >= 0.6, per_class
  assert result.test_metrics["conditional_accuracy"] >= 0.9


def test_recovering_a_directory_never_written_changes_nothing(tmp_path):
  """An exporter killed before its first write leaves no directory: there is
  nothing to recover, and nothing is created."""
  assert export.recover(str(tmp_path / "exports")) == []
  assert not (tmp_path / "exports").exists()


class _Killed(BaseException):
  """The exporter's process dying: nothing after it runs, not even cleanup."""


class _KillableGfile:
  """`tf.io.gfile` that dies at its `kill_at`-th operation.

  With `torn`, a file being opened for writing at that moment is left behind
  empty (created, nothing written), as a kill inside a write leaves it.
  Every operation after the kill raises too, so no `finally` of the exporter
  gets to tidy up.
  """

  def __init__(self, kill_at: int, torn: bool = False):
    self.kill_at, self.torn = kill_at, torn
    self.operations = 0
    self.killed_in = None  # The operation it died in.

  def __getattr__(self, name):
    real = getattr(tf.io.gfile, name)

    def operation(*args, **kwargs):
      if self.killed_in is None:
        self.operations += 1
        if self.operations == self.kill_at:
          self.killed_in = name
          if self.torn and _opens_for_writing(name, args, kwargs):
            with tf.io.gfile.GFile(args[0], "w") as f:
              f.write("")
      if self.killed_in is not None:
        raise _Killed(name)
      return real(*args, **kwargs)
    return operation


def _opens_for_writing(name, args, kwargs) -> bool:
  return name == "GFile" and "w" in (args[1:2] or [kwargs.get("mode", "r")])[0]


@pytest.mark.parametrize("replacing", [False, True],
                         ids=["new_version", "replacing_a_version"])
def test_a_kill_at_any_file_operation_leaves_complete_versions_only(
    tmp_path, monkeypatch, replacing):
  """Kills the exporter before its 1st, 2nd, ... filesystem operation (and
  inside each file it writes) until one export runs through; after each
  kill, `recover` must leave only complete versions, and never lose the
  version being replaced."""
  from engine.io import files
  vae = models.get("dense").build((28, 28, 1), 2)
  export_dir = str(tmp_path / "exports")
  if replacing:
    export.export(vae, export_dir, version=1)
  kills = []
  for kill_at in range(1, 200):
    for torn in (False, True):
      gfile = _KillableGfile(kill_at, torn)
      monkeypatch.setattr(files, "gfile", gfile)
      try:
        export.export(vae, export_dir, version=1)
      except _Killed:
        kills.append((kill_at, torn, gfile.killed_in))
      finally:
        monkeypatch.setattr(files, "gfile", tf.io.gfile)
      assert export.recover(export_dir) == [], kills[-1]
      entries = sorted(os.listdir(export_dir)) if os.path.isdir(
          export_dir) else []
      assert entries == (["1"] if replacing or not gfile.killed_in
                         else entries) and entries in ([], ["1"]), (
                             kills[-1], entries)
      for entry in entries:
        assert export.is_engine_export(os.path.join(export_dir, entry))
        assert os.path.exists(os.path.join(export_dir, entry,
                                           "saved_model.pb"))
      if not replacing:
        shutil.rmtree(export_dir, ignore_errors=True)
      if not gfile.killed_in or gfile.killed_in != "GFile":
        break  # A kill inside anything but a write leaves nothing torn.
    if not gfile.killed_in:
      break
  else:
    pytest.fail("the export never ran through")
  # The kill points included every kind of step an export takes.
  assert {"makedirs", "GFile", "rename", "remove"} <= {
      name for _, _, name in kills}, kills
  assert any(torn for _, torn, _ in kills), kills
