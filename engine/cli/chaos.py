r"""Kill loop: SIGKILLs a training run at random moments, restarts it with the
same command each time, and checks that nothing was lost or corrupted.

    vae-engine chaos --kills=12 --work_dir=/tmp/chaos -- \
        --model=dense --data_dir=path/to/mnist --train_steps=400 \
        --checkpoint_every=20 --steps_per_loop=5 --batch_size=64
    vae-engine chaos --workers=2 --kills=4 -- <the same flags>

The engine flags after `--` are run twice: once uninterrupted (the
reference, in <work_dir>/reference), and once under fire (<work_dir>/chaos),
killed `--kills` times. Kill moments cycle through three targets:

  step        a random moment while training steps run;
  checkpoint  the instant a checkpoint is being written (TF's `*_temp` dir);
  export      the instant the SavedModel export is being written (`.tmp-*`).

With `--workers=N` (N > 1) every launch is an N-worker
`multi_worker_mirrored` job on 127.0.0.1 in a private network namespace
(`launch_local`: its gRPC servers are reachable only from inside it), the
reference too, and each kill SIGKILLs one worker chosen at random, while
steps run or while the chief writes a checkpoint; the others must then exit
by themselves within `--survivor_timeout` seconds (the job is relaunched).

After every kill, every checkpoint left in the model directory must restore
and every export version must load and serve. At the end, the interrupted
run's final weights must equal the reference's bit for bit. The tool prints a
table of kills and exits non-zero on any failure. --model_dir and
--export_dir are set by the tool.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import sys
import time
from typing import Optional

from absl import flags

from engine.cli import tool

from engine.cli import jobs
from engine.cli.jobs import Job, listing, wait_for_target

TARGETS = ("step", "checkpoint", "export")


@dataclasses.dataclass
class Kill:
  """One kill: what was targeted, when, and what the directory held after."""

  number: int
  target: str
  seconds: float
  latest: str           # The newest checkpoint on disk after the kill.
  left_behind: str      # Partial writes the kill left (cleaned up later).
  checked: int          # Checkpoints and exports verified after the kill.
  victim: int = 0       # The worker killed (0: the chief, or the only one).
  survivors_exit_s: Optional[float] = None  # Until the others had exited.


def _final_result(model_dir: str):
  """(final step, test ELBO, weights fingerprint) from the run's result.json,
  or None if no run has finished there."""
  import tensorflow as tf

  from engine.run import finish

  try:
    result = finish.read_result(model_dir)
  except tf.errors.NotFoundError:
    return None
  return (result.final_step, result.test_metrics["elbo"],
          result.weights_fingerprint)


def kill_plan(kills: int, workers: int = 1) -> list[str]:
  """Targets in order: mid-training kills first (steps and checkpoint
  writes, alternating), then export kills, which only come at the end (not
  for multi-worker jobs, whose export is the chief's alone)."""
  exports = max(1, kills // 4) if kills >= 3 and workers == 1 else 0
  training = [TARGETS[i % 2] for i in range(kills - exports)]
  return training + ["export"] * exports


def verify_directory(model_dir: str, export_dir: str) -> int:
  """Restores every checkpoint and serves every export; returns how many.

  Raises:
    AssertionError: Naming the checkpoint or export that failed.
  """
  import numpy as np
  import tensorflow as tf

  from engine.io import checkpoints
  from engine.io import run_dir

  count = 0
  best = os.path.join(model_dir, checkpoints.BEST_DIR)  # --keep_best's.
  for path in (checkpoints.checkpoints_on_disk(model_dir)
               + checkpoints.checkpoints_on_disk(best)):
    try:
      trained = run_dir.load_trained_model(model_dir, path)
    except Exception as e:  # Any failure is what this tool looks for.
      raise AssertionError(f"checkpoint {path} does not restore: {e}") from e
    assert all(np.isfinite(v.numpy()).all()
               for v in trained.vae.encoder.trainable_variables), path
    count += 1
  for base in (export_dir, os.path.join(export_dir, checkpoints.BEST_DIR)):
    # A model server's versions: numbered directories (a dot: temporary).
    versions = (sorted(v for v in os.listdir(base) if v.isdigit())
                if os.path.isdir(base) else [])
    for version in versions:
      path = os.path.join(base, version)
      try:
        loaded = tf.saved_model.load(path)
        images = loaded.signatures["serving_default"](
            images=tf.zeros([2, 28, 28, 1]))["images"]
      except Exception as e:
        raise AssertionError(f"export {path} does not load: {e}") from e
      assert images.shape == (2, 28, 28, 1), path
      count += 1
  return count


def run(engine_args: list[str], kills: int, work_dir: str, seed: int = 0,
        log=None, workers: int = 1, survivor_timeout_s: float = 60.0) -> dict:
  """The whole experiment; returns a summary (see `main` for its use).

  Raises:
    AssertionError: If a checkpoint or export is corrupt, a run fails, a
      survivor outlives its dead peer by more than `survivor_timeout_s`, or
      the final weights differ from the reference.
  """
  from engine.io import checkpoints

  log = log or open(os.devnull, "w")
  rng = random.Random(seed)
  jobs.fresh_work_dir(work_dir)
  reference_dir = os.path.join(work_dir, "reference")
  job = Job(engine_args, reference_dir, os.path.join(reference_dir, "export"),
            workers, log)
  status = job.wait()
  reference = _final_result(reference_dir)
  assert status == 0 and reference, (
      "the reference run failed:\n" + "".join(job.lines[-20:]))

  model_dir = os.path.join(work_dir, "chaos")
  export_dir = os.path.join(model_dir, "export")
  history: list[Kill] = []
  started = time.monotonic()
  restarts = 0
  plan = kill_plan(kills, workers)
  while len(history) < kills:
    target = plan[len(history)]
    job = Job(engine_args, model_dir, export_dir, workers, log)
    launched = time.monotonic()
    wait_for_target(target, job, model_dir, export_dir, rng)
    restarts += 1
    victim = rng.randrange(workers)
    if not job.running():
      status = job.wait()
      if status == 0:
        # Finished before the moment came: start over from scratch so that
        # the remaining kills still land mid-run.
        shutil.rmtree(model_dir, ignore_errors=True)
        log.write(f"[chaos] run finished before a {target} kill; restarting "
                  "from scratch\n")
        if target == "export":
          raise AssertionError("the export was never caught in progress")
        if len(history) == 0:
          raise AssertionError("the run finishes before the first kill; "
                               "make it longer (--train_steps)")
        continue
      raise AssertionError(f"the run exited with {status} before the kill:\n"
                           + "".join(job.lines[-20:]))
    survivors_exit_s = job.kill(victim, survivor_timeout_s)
    assert job.processes[victim].returncode == -signal.SIGKILL, (
        f"worker {victim} exited with {job.processes[victim].returncode} "
        "instead of being killed:\n" + "".join(job.lines[-20:]))
    if workers > 1:
      assert survivors_exit_s is not None, (
          f"after worker {victim} was killed ({target}), the others were "
          f"still running {survivor_timeout_s:g} s later")
    partial = [n for n in listing(model_dir) if n.endswith("_temp")] + [
        n for n in listing(export_dir) if n.startswith(".tmp-")]
    checked = verify_directory(model_dir, export_dir)
    on_disk = checkpoints.checkpoints_on_disk(model_dir)
    history.append(Kill(len(history) + 1, target,
                        time.monotonic() - launched,
                        os.path.basename(on_disk[0]) if on_disk else "-",
                        ", ".join(partial) or "-", checked, victim,
                        survivors_exit_s if workers > 1 else None))
    log.write(f"[chaos] kill {len(history)}: {target}, worker {victim}\n")

  job = Job(engine_args, model_dir, export_dir, workers, log)
  status = job.wait()
  final = _final_result(model_dir)
  assert status == 0 and final, (
      "the final restart failed:\n" + "".join(job.lines[-20:]))
  verify_directory(model_dir, export_dir)
  assert final[0] == reference[0], (final, reference)
  assert final[2] == reference[2], (
      f"final weights {final[2]} differ from the uninterrupted run's "
      f"{reference[2]}")
  return {"kills": history, "restarts": restarts + 1,
          "final_step": final[0], "weights": final[2],
          "reference_weights": reference[2], "test_elbo": final[1],
          "reference_test_elbo": reference[1], "workers": workers,
          "seconds": time.monotonic() - started}


def define_flags() -> None:
  flags.DEFINE_integer("kills", 12, "How many times to SIGKILL the run.",
                       lower_bound=1)
  flags.DEFINE_integer("workers", 1, "1: one engine process; N > 1: an "
                       "N-worker multi_worker_mirrored job on 127.0.0.1, one "
                       "worker killed at a time.", lower_bound=1)
  flags.DEFINE_float("survivor_timeout", 60.0,
                     "Seconds the other workers may take to exit by "
                     "themselves after one is killed.", lower_bound=0)
  flags.DEFINE_string("work_dir", "/tmp/vae_engine_chaos",
                      "Where the reference and the killed run write "
                      "(emptied first).")
  flags.DEFINE_integer("seed", 0, "Seeds the kill moments and victims.")
  flags.DEFINE_string("log", None, "Where the runs' output goes "
                      "(default: <work_dir>.log).")


def main(argv: list[str]) -> int:
  from engine.errors import UserError

  engine_args = argv[1:]  # What follows `--`.
  if any(a.startswith(("--model_dir", "--export_dir")) for a in engine_args):
    raise UserError("--model_dir and --export_dir are set by chaos.py; "
                    "drop them")
  fv = flags.FLAGS
  log_path = fv.log or fv.work_dir.rstrip("/") + ".log"
  with open(log_path, "w") as log:
    try:
      summary = run(engine_args, fv.kills, fv.work_dir, fv.seed, log,
                    fv.workers, fv.survivor_timeout)
    except AssertionError as e:
      print(f"FAILED: {e}\n(run output: {log_path})", file=sys.stderr)
      return 1
  print(f"{'kill':>4}  {'target':<10}  {'worker':>6}  {'after':>7}  "
        f"{'others exited':>13}  {'latest ckpt':<12}  "
        f"{'partial write left':<28}  verified")
  for kill in summary["kills"]:
    exited = ("-" if kill.survivors_exit_s is None
              else f"{kill.survivors_exit_s:.1f}s")
    print(f"{kill.number:>4}  {kill.target:<10}  {kill.victim:>6}  "
          f"{kill.seconds:6.1f}s  {exited:>13}  {kill.latest:<12}  "
          f"{kill.left_behind[:28]:<28}  "
          f"{kill.checked} ckpt/export(s) restored")
  print(f"{len(summary['kills'])} kills of a {summary['workers']}-process "
        f"job, {summary['restarts']} starts, {summary['seconds']:.0f} s: "
        f"final step {summary['final_step']}, weights {summary['weights']} "
        f"(uninterrupted: {summary['reference_weights']}), test ELBO "
        f"{summary['test_elbo']} (uninterrupted: "
        f"{summary['reference_test_elbo']}): identical")
  return 0



def cli() -> None:
  """The `vae-engine chaos` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
