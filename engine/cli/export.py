"""Exports a SavedModel (and LiteRT models) from any checkpoint of a run.

    vae-engine export --model_dir=/tmp/conv [--checkpoint=/tmp/conv/ckpt-400]
        [--export_dir=/tmp/conv/export]
        [--tflite [--tflite_quantize=float16,dynamic_int8]]

Writes `<export_dir>/<step>/` (TF Serving layout, with its warm-up requests)
atomically; the run's saved config says which model to rebuild, so no model
flags are needed. `--tflite` adds `<step>/tflite/<signature>.tflite` for
every signature (float32), and `--tflite_quantize` the quantized variants;
each file's size and its largest difference from the SavedModel on real test
images (the run's data, or --data_dir) are printed, and written as JSON with
--output_json.
"""

from engine.cli import tool  # First: TensorFlow's quiet import.

from absl import flags

import flags as engine_flags

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """The tool's flags, on `fv` (absl's global ones for the command)."""
  flags.DEFINE_string("model_dir", None, "The run's directory.",
                      required=True, flag_values=fv)
  flags.DEFINE_string("checkpoint", None,
                      "Checkpoint path (default: latest).", flag_values=fv)
  flags.DEFINE_string("export_dir", None,
                      "Parent of the versioned exports (default: the run's "
                      "--export_dir, else <model_dir>/export).",
                      flag_values=fv)
  flags.DEFINE_boolean("tflite", False,
                       "Also convert every signature to LiteRT (float32), "
                       "into <version>/tflite/<signature>.tflite.",
                       flag_values=fv)
  flags.DEFINE_list("tflite_quantize", [],
                    "Quantized LiteRT variants to add (implies --tflite): "
                    "float16 (weights as float16), dynamic_int8 (weights as "
                    "int8, dynamic-range quantization).", flag_values=fv)
  flags.register_validator(
      "tflite_quantize", lambda v: set(v) <= {"float16", "dynamic_int8"},
      message="--tflite_quantize must list float16 and/or dynamic_int8",
      flag_values=fv)
  flags.DEFINE_integer("compare_examples", 256,
                       "Test images the LiteRT models are compared on.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_string("output_json", None,
                      "Write each LiteRT file's size and differences here.",
                      flag_values=fv)
  engine_flags.define_overrides(("dataset", "data_dir"), fv)


def main(argv):
  del argv
  import dataclasses
  import json
  import os

  import numpy as np

  from engine.run import parts
  from engine.io import run_dir
  from engine.io import run_lock
  from engine.serving import export
  from engine.io import files
  from engine.serving import tflite
  from engine.data import sources
  from engine.errors import quoted
  from engine.serving.loaded import Exported

  trained = run_dir.load_trained_model(FLAGS.model_dir,
                                             FLAGS.checkpoint)
  export_dir = (FLAGS.export_dir or trained.config.train.export_dir
                or os.path.join(FLAGS.model_dir, "export"))
  # Inside the run directory the run itself may be exporting the same
  # version: one writer at a time.
  lock = run_lock.acquire_if_inside(  # noqa: F841
      FLAGS.model_dir, export_dir, "model_dir", "vae-engine export")
  variants = (("float32", *FLAGS.tflite_quantize)
              if FLAGS.tflite or FLAGS.tflite_quantize else ())
  path = export.export(trained.vae, export_dir, trained.step,
                       denoising=trained.config.data.noise_factor > 0,
                       tflite_variants=variants)
  print(f"exported {trained.checkpoint} to {path}")
  if not variants:
    return

  data_config = dataclasses.replace(trained.config.data, **{
      name: getattr(FLAGS, name) for name in ("dataset", "data_dir")
      if FLAGS[name].value is not None})
  data = sources.load(data_config, trained.config.train.seed)
  count = min(FLAGS.compare_examples, len(data.test_images))
  images = data.test_images[:count].astype(np.float32) / 255.0
  labels = data.test_labels[:count]
  parts.check_test_labels(trained.vae.num_classes, labels, data.source)
  exported = Exported.load(path)
  data.check_shape(exported.image_shape,
                   f"--model_dir={quoted(FLAGS.model_dir)}")
  inputs = tflite.reference_inputs(exported, images, labels)
  report = {"export": path, "test_images": count, "source": data.source,
            "files": {}}
  print(f"LiteRT models, compared with the SavedModel on {count} test "
        f"images of {data.source} (max |difference| per output):")
  for signature in sorted(exported.loaded.signatures):
    for variant in variants:
      file_path = files.join(path, tflite.DIRECTORY,
                             tflite.file_name(signature, variant))
      size = files.gfile.stat(file_path).length
      differences = tflite.max_differences(exported, file_path, signature,
                                           inputs[signature])
      report["files"][file_path] = {"signature": signature,
                                    "variant": variant, "bytes": size,
                                    "max_abs_difference": differences}
      shown = ", ".join(f"{name} {value:.2e}"
                        for name, value in differences.items())
      print(f"  {os.path.basename(file_path):<32} {size:>10,} bytes  "
            f"{shown}")
  if FLAGS.output_json:
    files.write_atomically(FLAGS.output_json, json.dumps(report, indent=2))
    print(f"wrote {FLAGS.output_json}")



def cli() -> None:
  """The `vae-engine export` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
