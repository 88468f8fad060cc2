r"""Reproduces a published table under its protocol, our numbers beside the
paper's.

    vae-engine reproduce iwae_table1 --root=~/runs/iwae_table1 \
        --data_dir=path/to/mnist --rows=vae_k1,vae2_k1
    vae-engine reproduce iwae_table1 --root=~/runs/iwae_table1 --status

`iwae_table1` is Burda, Grosse & Salakhutdinov (2015), Table 1: MNIST test
NLL of one- and two-stochastic-layer networks trained as a VAE or an IWAE
for 3,280 passes (the presets `iwae_vae`, `iwae_iwae5`, `iwae_iwae50`,
`iwae2_vae`, `iwae2_iwae5`, `iwae2_iwae50`). Each row trains into
`<root>/<row>` with its preset, one row after another; the row's model dir
is its state, so after a kill or any interruption the same command resumes
every unfinished row where it stopped. A row whose training is done (the
protocol, or `--train_steps`) gets its test NLL (K=5000, `vae-engine
evaluate`, written to `<root>/<row>/nll.json`, redone only when the row
moved on); a child that fails ends the command with its status, and the
rows after it wait for the next run. Then the table
is printed and written as `<root>/table.md` and `<root>/table.json`: NLL ±
standard error, the test ELBO, active units per latent group, passes done,
training hours (from the run's logged throughput) and the paper's number; a
row short of the protocol is marked partial with its passes.

`--status` writes the table from what is on disk (rows another process is
training included) and trains nothing; `--train_steps` ends each row's
training at that step this time (a short look; the row stays partial).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from engine.cli import tool  # First: TensorFlow's quiet import.

from absl import flags

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
  """The tool's flags, on `fv` (absl's global ones for the command)."""
  flags.DEFINE_string("root", None,
                      "Directory holding one model dir per row.",
                      required=True, flag_values=fv)
  flags.DEFINE_string("data_dir", None, "MNIST (IDX files), as for "
                      "training; needed unless --status.", flag_values=fv)
  flags.DEFINE_list("rows", None, "Rows to run, of: " + ", ".join(
      ["vae_k1", "iwae_k5", "iwae_k50", "vae2_k1", "iwae2_k5", "iwae2_k50"])
                    + " (default: all).", flag_values=fv)
  flags.DEFINE_bool("status", False, "Only write the table from what is on "
                    "disk; train and evaluate nothing.", flag_values=fv)
  flags.DEFINE_integer("train_steps", None, "End each row's training at "
                       "this step this time (default: the protocol's).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("eval_nll_samples", 5000, "K of the test NLL.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("eval_batch_size", 100, "Test images per batch of "
                       "the NLL estimate.", lower_bound=1, flag_values=fv)


PROTOCOL_PASSES = 3280
# Row -> (preset, stochastic layers, objective and k, the paper's NLL).
TABLES = {"iwae_table1": {
    "vae_k1": ("iwae_vae", 1, "VAE, k=1", 86.76),
    "iwae_k5": ("iwae_iwae5", 1, "IWAE, k=5", 85.54),
    "iwae_k50": ("iwae_iwae50", 1, "IWAE, k=50", 84.78),
    "vae2_k1": ("iwae2_vae", 2, "VAE, k=1", 85.33),
    "iwae2_k5": ("iwae2_iwae5", 2, "IWAE, k=5", 83.89),
    "iwae2_k50": ("iwae2_iwae50", 2, "IWAE, k=50", 82.90),
}}
NLL_JSON = "nll.json"


def _read_json(path):
  from engine.io import files
  if not files.gfile.exists(path):
    return None
  try:
    return json.loads(files.read_text(path))
  except ValueError:  # Half a file: as good as none.
    return None


def _metrics(model_dir):
  """The run's logged lines (`metrics.jsonl`), train and eval."""
  from engine.io import files
  path = files.join(model_dir, "metrics.jsonl")
  if not files.gfile.exists(path):
    return []
  text = files.read_text(path)
  lines = []
  for line in text.splitlines():
    try:
      lines.append(json.loads(line))
    except ValueError:
      continue  # A line cut by a kill.
  return lines


def row_state(root: str, row: str, preset: str) -> dict:
  """What a row's model dir says: steps, passes, hours, latest numbers."""
  model_dir = os.path.join(root, row)
  config = _read_json(os.path.join(model_dir, "config.json")) or {}
  data = _read_json(os.path.join(model_dir, "data.json")) or {}
  batch = config.get("train", {}).get("batch_size", 20)
  examples = data.get("train_examples", 60_000)
  logged = _metrics(model_dir)
  train = [m for m in logged if m.get("split") == "train"]
  evals = [m for m in logged if m.get("split") == "eval"]
  step, hours, previous = 0, 0.0, 0
  for line in train:
    if line["step"] > previous and line.get("examples_per_sec"):
      hours += (line["step"] - previous) * batch / line[
          "examples_per_sec"] / 3600
    previous = line["step"]
    step = max(step, line["step"])
  result = _read_json(os.path.join(model_dir, "result.json"))
  if result:
    step = max(step, result["final_step"])
  # The engine's own count: full batches per pass (`pipeline.steps_per_epoch`).
  protocol = PROTOCOL_PASSES * (examples // batch)
  state = {"row": row, "preset": preset, "model_dir": model_dir,
           "step": step, "protocol_steps": protocol,
           "passes": round(step / max(examples // batch, 1), 1),
           "train_hours": round(hours, 2),
           "finished": bool(result) and result["final_step"] >= protocol}
  # The newest numbers: result.json's unless an evaluation came after it.
  latest = (result or {}).get("test_metrics") or {}
  if evals and (not result or evals[-1]["step"] > result["final_step"]):
    latest = evals[-1]
  for name in ("elbo", "active_units", "active_units_z1", "active_units_z2"):
    if name in latest:
      state[name] = latest[name]
  nll = _read_json(os.path.join(model_dir, NLL_JSON))
  if nll and result and nll.get("step") == result["final_step"]:
    state.update(nll=nll["nll"], nll_stderr=nll["nll_stderr"],
                 nll_samples=nll["num_samples"])
  return state


def _run(args) -> None:
  """A child `vae-engine` process; its exit status ends ours if not 0."""
  command = [sys.executable, "-m", "engine.main", *args]
  print("$ vae-engine " + " ".join(args), flush=True)
  status = subprocess.call(command)
  if status:
    sys.exit(status)


def _table(states: list[dict], table: dict) -> str:
  lines = ["| row | layers | objective | paper NLL | our NLL (K) | test ELBO "
           "| active units | passes | training hours | status |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for state in states:
    _, layers, objective, paper = table[state["row"]]
    nll = (f"{state['nll']:.2f} ± {state['nll_stderr']:.2f} "
           f"({state['nll_samples']})" if "nll" in state else "—")
    elbo = f"{state['elbo']:.2f}" if "elbo" in state else "—"
    units = (f"{state['active_units']:.0f}" if "active_units" in state
             else "—")
    if "active_units_z1" in state:
      units += (f" (z1 {state['active_units_z1']:.0f}, "
                f"z2 {state['active_units_z2']:.0f})")
    status = ("done" if state["finished"] else "not started"
              if not state["step"] else
              f"partial: {state['passes']:g} of {PROTOCOL_PASSES} passes")
    lines.append(f"| {state['row']} | {layers} | {objective} | {paper:.2f} "
                 f"| {nll} | {elbo} | {units} | {state['passes']:g} | "
                 f"{state['train_hours']:.2f} | {status} |")
  return "\n".join(lines) + "\n"


def main(argv):
  import tensorflow as tf

  from engine.errors import UserError, quoted
  from engine.io import files
  from engine.run import preflight

  if len(argv) != 2 or argv[1] not in TABLES:
    raise UserError(f"vae-engine reproduce: name one table, of "
                    f"{', '.join(TABLES)} (got {' '.join(argv[1:]) or 'none'})"
                    "; e.g. vae-engine reproduce iwae_table1 --root=DIR "
                    "--data_dir=MNIST")
  table = TABLES[argv[1]]
  rows = FLAGS.rows or list(table)
  unknown = [row for row in rows if row not in table]
  if unknown:
    raise UserError(f"--rows: {', '.join(unknown)} not rows of {argv[1]}; "
                    f"rows: {', '.join(table)}")
  root = os.path.expanduser(FLAGS.root)
  if not FLAGS.status:
    if not FLAGS.data_dir:
      raise UserError("--data_dir: needed to train (MNIST's IDX files); "
                      "pass it, or --status to only write the table")
    files.gfile.makedirs(root)
    preflight.writable_directory("root", root)
    for row in rows:
      preset = table[row][0]
      state = row_state(root, row, preset)
      model_dir = os.path.join(root, row)
      target = FLAGS.train_steps or state["protocol_steps"]
      if state["step"] < target or not _read_json(
          os.path.join(model_dir, "result.json")):
        _run([f"--preset={preset}", f"--data_dir={FLAGS.data_dir}",
              f"--model_dir={model_dir}", "--nofigures",
              *([f"--train_steps={FLAGS.train_steps}"]
                if FLAGS.train_steps else [])])
        state = row_state(root, row, preset)
      if "nll" not in state or state["nll_samples"] != FLAGS.eval_nll_samples:
        _run(["evaluate", f"--model_dir={model_dir}",
              f"--data_dir={FLAGS.data_dir}",
              f"--eval_nll_samples={FLAGS.eval_nll_samples}",
              f"--batch_size={FLAGS.eval_batch_size}",
              f"--output_json={os.path.join(model_dir, NLL_JSON)}"])
  elif not files.gfile.isdir(root):
    raise UserError(f"--root={quoted(root)}: no such directory; pass the "
                    "--root the rows were trained into")
  states = [row_state(root, row, table[row][0]) for row in rows]
  text = _table(states, table)
  print(text, end="")
  try:
    files.write_atomically(os.path.join(root, "table.md"),
                           f"# {argv[1]}\n\n{text}")
    files.write_atomically(os.path.join(root, "table.json"), json.dumps(
        {"table": argv[1], "protocol_passes": PROTOCOL_PASSES,
         "rows": [{**state, "paper_nll": table[state["row"]][3]}
                  for state in states]}, indent=2))
  except (OSError, tf.errors.OpError) as e:
    if not FLAGS.status:
      raise UserError(f"--root={quoted(root)}: cannot write the table "
                      f"({e}); make it writable and run again") from None
    print(f"(the table was not written: {quoted(root)} is read-only)")
    return
  print(f"wrote {os.path.join(root, 'table.md')} and table.json")


def cli() -> None:
  """The `vae-engine reproduce` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
