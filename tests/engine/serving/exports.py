"""The suite's serving exports, built once (the `served` fixture of
tests/engine/serving/conftest.py): a briefly trained export of each kind, the inputs
each signature is fed (good ones, and bad ones it must refuse), and every
runtime's outcomes on them, in a fresh process that never imports the engine
(tests/engine/serving/runtimes.py): the session loader first, in a process
as fresh as TF Serving's, then LiteRT, then the TF2 reference."""

import io
import json
import os
import subprocess
import sys

import numpy as np

from engine.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from engine.data import sources
from engine.io import run_dir
from engine.run import runner
from tests.helpers import REPO_ROOT, photo_patches

RUNTIMES_SCRIPT = os.path.join(os.path.dirname(__file__), "runtimes.py")
# Each kind of export the issue names: (model config, data).
KINDS = {
    "conv": (ModelConfig(name="conv", latent_dim=2), "mnist"),
    "dense": (ModelConfig(name="dense", latent_dim=2), "mnist"),
    "conditional": (ModelConfig(name="conv", latent_dim=2, conditional=True),
                    "mnist"),
    "denoising": (ModelConfig(name="denoising", latent_dim=40), "mnist"),
    # Two latent groups (4 + 2): per-group moments, top-down samples and
    # `decode_top`.
    "hierarchical": (ModelConfig(name="iwae_mlp2", latent_dim=6), "mnist"),
    "colour": (ModelConfig(name="conv", latent_dim=2,
                           reconstruction_loss="discretized_logistic"),
               "patches"),
}
# In the order the runtimes run: the reference last, as it also decodes the
# other runtimes' sample draws.
RUNTIMES = ("session", "litert", "tf2")
# float32 agreement: images (in [0, 1]) to 1e-5 absolute; unbounded outputs
# (logits, log-variances) to 1e-5 of their magnitude, where runtimes that
# sum in another order (XNNPACK, oneDNN) differ in the last bits.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
NON_FINITE = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def fresh_process(*args, cwd, env=None):
  """A Python process with neither the repository nor PYTHONPATH on its path
  (`env`: variables to set in it)."""
  env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
         **(env or {})}
  return subprocess.run([sys.executable, *args], capture_output=True,
                        text=True, cwd=str(cwd), env=env, timeout=900)


# The page that documents the REST requests (its `<!-- rest-requests -->`
# block).
SERVING_PAGE = os.path.join(REPO_ROOT, "docs", "serving.md")


def documented_rest_requests():
  """docs/serving.md's REST bodies, one per signature (`IMAGE` stands for
  one image as nested lists; a conditional model's carry `"label"`)."""
  with open(SERVING_PAGE, encoding="utf-8") as f:
    page = f.read()
  block = page.split("<!-- rest-requests -->", 1)[1].split("```json", 1)[1]
  block = block.split("```", 1)[0]
  return [line for line in block.splitlines() if line.startswith("{")]


def rest_bodies(images, label=None):
  """docs/serving.md's bodies with a real image filled in (and, for a
  conditional model, `"label"` added to every row, as the page says)."""
  bodies = []
  for line in documented_rest_requests():
    body = json.loads(line.replace("IMAGE", json.dumps(images[0].tolist())))
    if label is not None:
      for row in body.get("instances") or [body["inputs"]]:
        row["label"] = label
    bodies.append(body)
  return bodies


def bad_inputs(signature_feeds, latent_dim, num_classes):
  """What each signature must refuse: case -> (signature, its inputs, the
  input the error must name, a fragment of the message). Every float input
  of every signature with one NaN, +Inf or -Inf; a `z` one too wide; images
  a row short, or in [0, 255]; a conditional model's labels one short, or
  one not a class."""
  cases = {}
  for signature, inputs in signature_feeds.items():
    for name, value in inputs.items():
      if value.dtype != np.float32:
        continue
      for kind, bad in NON_FINITE.items():
        broken = value.copy()
        broken.flat[broken.size // 2] = bad
        cases[f"{signature}.{name}.{kind}"] = (
            signature, {**inputs, name: broken}, name,
            "holds NaN or Inf values")
  decode, encode = signature_feeds["decode"], signature_feeds["encode"]
  rows = len(decode["z"])
  cases["decode.z.width"] = (
      "decode", {**decode, "z": np.zeros((rows, latent_dim + 1), np.float32)},
      "z", f"shape [{rows} {latent_dim + 1}], expected [N, {latent_dim}]")
  cases["encode.images.shape"] = (
      "encode", {**encode, "images": encode["images"][:, 1:]}, "images",
      "expected [N, " + ", ".join(map(str, encode["images"].shape[1:])))
  cases["encode.images.range"] = (
      "encode", {**encode, "images": encode["images"] * 255}, "images",
      "outside [0, 1]")
  if num_classes:
    cases["decode.label.rows"] = (
        "decode", {**decode, "label": decode["label"][1:]}, "label",
        f"expected [{rows}]")
    cases["encode.label.class"] = (
        "encode", {**encode, "label": np.full_like(encode["label"],
                                                   num_classes)},
        "label", f"expected classes in [0, {num_classes})")
  return cases


def _write_feeds(path, feeds_by_case):
  np.savez(path, **{f"{case}/{key}": value
                    for case, inputs in feeds_by_case.items()
                    for key, value in inputs.items()})


def build(root, small_mnist_dir):
  """Trains and exports each kind under `root`, then runs every runtime."""
  patches = root / "patches"
  patches.mkdir()
  photo_patches(str(patches))
  data_dirs = {"mnist": small_mnist_dir, "patches": str(patches)}
  exports, vaes, bad, feeds_dir, out_dir = {}, {}, {}, root / "feeds", \
      root / "out"
  feeds_dir.mkdir()
  out_dir.mkdir()
  rng = np.random.default_rng(0)
  for name, (model, data) in KINDS.items():
    data_config = DataConfig(data_dir=data_dirs[data],
                             noise_factor=0.2 if name == "denoising" else 0)
    result = runner.run(RunConfig(
        data=data_config, model=model,
        train=TrainConfig(model_dir=str(root / name), batch_size=32,
                          train_steps=60, steps_per_loop=30, log_every=30,
                          checkpoint_every=0, figures=False,
                          learning_rate=3e-3,
                          # The exports are what these tests read, not how
                          # the steps were compiled: XLA's compile of a
                          # model's training loop costs more than its steps.
                          jit_compile=False,
                          export_dir=str(root / name / "export"))),
                        io.StringIO())
    exports[name] = result.export_path
    vaes[name] = run_dir.load_trained_model(str(root / name)).vae
    dataset = sources.load(data_config)
    images = dataset.test_images[:6].astype(np.float32) / 255.0
    labels = dataset.test_labels[:6].astype(np.int32)
    latent = vaes[name].latent_dim
    signature_feeds = {"encode": {"images": images},
                       "reconstruct": {"images": images},
                       "serving_default": {"images": images},
                       "decode": {"z": rng.normal(size=(6, latent)).astype(
                           np.float32) * 1.5},
                       "sample": {"num": np.array(5, np.int32)}}
    if name == "denoising":
      signature_feeds["denoise"] = {"images": images}
    if vaes[name].hierarchical:
      signature_feeds["decode_top"] = {"z_top": rng.normal(size=(
          6, vaes[name].top_dim)).astype(np.float32)}
    if model.conditional:
      for signature, inputs in signature_feeds.items():
        inputs["label"] = (np.array(3, np.int32) if signature == "sample"
                           else labels)
    _write_feeds(feeds_dir / f"{name}.npz", signature_feeds)
    bad[name] = bad_inputs(signature_feeds, latent, vaes[name].num_classes)
    _write_feeds(feeds_dir / f"{name}.bad.npz",
                 {case: inputs for case, (_, inputs, _, _) in bad[name].items()})
    (feeds_dir / f"{name}.bad.json").write_text(json.dumps(
        {case: signature for case, (signature, _, _, _) in bad[name].items()}))
    if latent == 2:  # docs/serving.md's decode bodies are for a latent of 2.
      (feeds_dir / f"{name}.rest.json").write_text(json.dumps(
          rest_bodies(images, int(labels[0]) if model.conditional else None)))
  outputs, reports = {}, {}
  # One process for all three: what they prove is each runtime's answers
  # without the engine, not a process each (a TensorFlow import each).
  ran = fresh_process(RUNTIMES_SCRIPT, ",".join(RUNTIMES), json.dumps(exports),
                      str(feeds_dir), str(out_dir), cwd=root)
  assert ran.returncode == 0, ran.stderr[-4000:]
  for runtime in RUNTIMES:
    for name in KINDS:
      with np.load(out_dir / f"{name}.{runtime}.npz") as archive:
        outputs[name, runtime] = dict(archive)
      reports[name, runtime] = json.loads(
          (out_dir / f"{name}.{runtime}.json").read_text())
  return dict(exports=exports, vaes=vaes, outputs=outputs, reports=reports,
              bad=bad, feeds_dir=feeds_dir, root=root)
