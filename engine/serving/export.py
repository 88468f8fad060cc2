"""SavedModel export with named serving signatures.

The export is a `tf.Module` with explicit input signatures, so it loads with
`tf.saved_model.load` (or TF Serving) in a process that never imported our
code, and needs no Python lambdas or pickles. Images are float32 in [0, 1];
the decoder's outputs are probabilities (`images`) and their `logits`. Outputs are float32
whatever policy the model computed in.

Layout follows TF Serving: `<export_dir>/<step>/`. Each version is written to
a temporary directory beside it and renamed into place only when complete, so
a killed export never leaves a directory that looks complete but is not, and
never touches an earlier version. Each version is marked as this engine's
(`MARKER`), and nothing at a version's path that lacks the mark is ever
replaced: a user's own files there are refused, not deleted.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Sequence

from absl import logging
import tensorflow as tf

import models
from engine.io import files
from engine.devices import precision
from engine.serving import warmup
from engine.serving.signatures import ServingModule
from engine.serving import tflite
from engine.errors import UserError, quoted, reason
from models.base import VariationalAutoencoder

# Written into every version: an export this engine wrote and may replace.
MARKER = "assets.extra/vae_engine_export.json"
# The exporter's own temporary entries: `.tmp-<version>-<8 hex>` (being
# written) and `.old-<version>-<8 hex>` (retired while being replaced).
_OWN_ENTRY = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]{8}")
# Written first into a `.tmp-*` directory and removed last, before it is
# renamed into place: what proves the directory is the exporter's.
STAGING_MARKER = ".vae-engine-staging"


def float32_model(vae: VariationalAutoencoder) -> VariationalAutoencoder:
  """The model computing in float32: itself, or a float32 twin holding its
  weights (a model trained under a mixed policy computes in bfloat16 or
  float16, which LiteRT cannot run and CPUs serve slowly; its weights are
  float32 already)."""
  # A model takes the policy it was built under, as its layers do.
  if vae.encoder.compute_dtype == vae.decoder.compute_dtype == "float32":
    return vae
  with precision.policy_scope("float32"):
    twin = models.get(vae.name).create(
        vae.image_shape, vae.latent_dim,
        learned_scale=vae.log_scale is not None, num_classes=vae.num_classes)
  for ours, theirs in zip(twin.encoder.weights + twin.decoder.weights,
                          vae.encoder.weights + vae.decoder.weights):
    if ours.shape != theirs.shape:
      raise ValueError(f"cannot rebuild {vae.name} in float32: "
                       f"{ours.path} {ours.shape} != {theirs.shape}")
    ours.assign(theirs)
  return twin


def recover(export_dir: str) -> list[str]:
  """Cleans up after an exporter that was killed part-way.

  Only entries proven the exporter's are touched: a `.tmp-*` directory is
  removed when it holds `STAGING_MARKER` or `MARKER` (or nothing at all); a
  version retired for replacement (`.old-<v>-*/old`, an export this engine
  wrote) whose replacement never arrived is put back. Assumes a single
  exporter per directory (the chief).

  Returns:
    The entries named like the exporter's but left alone (reported in one
    warning line).
  """
  left = []
  if not files.gfile.isdir(export_dir):
    return left  # Killed before its first write: nothing to clean up.
  for entry in sorted(files.gfile.listdir(export_dir)):
    entry = entry.rstrip("/")
    path = files.join(export_dir, entry)
    match = _OWN_ENTRY.fullmatch(entry)
    if not match:
      continue  # Not ours: never touched.
    if match.group(1) == "old":
      version = match.group(2)
      retired = files.join(path, "old")
      inside = {name.rstrip("/") for name in files.gfile.listdir(path)}
      if not inside <= {"old"} or (inside and not is_engine_export(retired)):
        left.append(entry)
        continue
      if files.gfile.isdir(retired) and not files.gfile.exists(
          files.join(export_dir, version)):
        files.move_tree(retired, files.join(export_dir, version))
      files.remove_tree(path)
    elif (files.gfile.exists(files.join(path, STAGING_MARKER))
          or is_engine_export(path) or not files.gfile.listdir(path)):
      files.remove_tree(path)
    else:
      left.append(entry)
  if left:
    logging.warning("left alone in %s: %s (named like the exporter's "
                    "temporary entries, but not written by it)", export_dir,
                    ", ".join(left))
  return left


def is_engine_export(path: str) -> bool:
  """Whether `path` is a version directory this engine wrote."""
  return files.gfile.exists(files.join(path, MARKER))


def check_replaceable(export_dir: str, version: int) -> None:
  """Raises a UserError if `<export_dir>/<version>` holds anything but an
  export of this engine (which a new export of that version replaces)."""
  path = files.join(export_dir, str(version))
  if not files.gfile.exists(path) or is_engine_export(path):
    return
  what = "a directory" if files.gfile.isdir(path) else "a file"
  raise UserError(
      f"--export_dir={quoted(export_dir)}: {quoted(path)} is {what} that "
      f"vae-engine did not write (no {MARKER}), where the export of step "
      f"{version} goes; move it away or pass another --export_dir")


def export(vae: VariationalAutoencoder, export_dir: str, version: int,
           denoising: bool = False,
           tflite_variants: Sequence[str] = ()) -> str:
  """Writes `<export_dir>/<version>/` atomically and returns its path.

  The version holds the SavedModel, TF Serving's warm-up requests
  (`serving_warmup`) and, if asked, each signature as a LiteRT model
  (`tflite`). An existing export of the same version is replaced only once
  the new one is complete.

  Args:
    vae: The model to export.
    export_dir: Parent of the versioned exports.
    version: The version (the training step).
    denoising: Add the `denoise` signature.
    tflite_variants: `tflite.VARIANTS` to convert every signature to.

  Returns:
    The path of the finished export.

  Raises:
    UserError: If the version's path holds something this engine did not
      write, or the export cannot be written (the OS's reason); nothing
      half-written is left.
  """
  try:
    files.gfile.makedirs(export_dir)
    recover(export_dir)
  except (OSError, tf.errors.OpError) as e:
    raise UserError(f"--export_dir={quoted(export_dir)}: not writable "
                    f"({reason(e)})") from None
  check_replaceable(export_dir, version)
  final = files.join(export_dir, str(version))
  unique = uuid.uuid4().hex[:8]
  staging = files.join(export_dir, f".tmp-{version}-{unique}")
  try:
    files.gfile.makedirs(staging)
    files.create_marker(files.join(staging, STAGING_MARKER))
    module = ServingModule(float32_model(vae), denoising=denoising)
    signatures = module.signatures()
    tf.saved_model.save(module, staging, signatures=signatures)
    warmup.write(staging, signatures)
    if tflite_variants:
      tflite.write(staging, sorted(signatures), tflite_variants)
    files.gfile.makedirs(files.join(staging, "assets.extra"))
    files.write_atomically(files.join(staging, MARKER), json.dumps({
        "written_by": "vae-engine", "version": version, "model": vae.name,
        "signatures": sorted(signatures)}, indent=2))
    files.gfile.remove(files.join(staging, STAGING_MARKER))
    if files.gfile.exists(final):
      retired = files.join(export_dir, f".old-{version}-{unique}")
      files.move_tree(final, files.join(retired, "old"))
      files.move_tree(staging, final)
      files.remove_tree(retired)
    else:
      files.move_tree(staging, final)
  except (OSError, tf.errors.OpError) as e:
    files.remove_tree(staging)
    raise UserError(f"--export_dir={quoted(export_dir)}: could not write the "
                    f"export of step {version} ({reason(e)}); nothing of it "
                    "was kept") from None
  except BaseException:
    files.remove_tree(staging)
    raise
  return final
