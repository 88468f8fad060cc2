"""Kill loop: SIGKILLs a training run at random moments, restarts it with the
same command each time, and checks that nothing was lost or corrupted.

    python tools/chaos.py --kills=12 --work_dir=/tmp/chaos -- \
        --model=dense --data_dir=path/to/mnist --train_steps=400 \
        --checkpoint_every=20 --steps_per_loop=5 --batch_size=64

The engine flags after `--` are run twice: once uninterrupted (the
reference, in <work_dir>/reference), and once under fire (<work_dir>/chaos),
killed `--kills` times. Kill moments cycle through three targets:

  step        a random moment while training steps run;
  checkpoint  the instant a checkpoint is being written (TF's `*_temp` dir);
  export      the instant the SavedModel export is being written (`.tmp-*`).

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
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


class _Watcher:
  """Reads a child's output in a thread, noting when training is under way."""

  def __init__(self, process: subprocess.Popen, log):
    self.training = threading.Event()
    self.lines: list[str] = []
    self._thread = threading.Thread(target=self._read, args=(process, log),
                                    daemon=True)
    self._thread.start()

  def _read(self, process, log):
    for line in process.stdout:
      self.lines.append(line)
      log.write(line)
      if line.startswith("step "):  # A progress line: steps are running.
        self.training.set()

  def join(self):
    self._thread.join(timeout=30)


def _engine(args: list[str], model_dir: str, export_dir: str, log):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  command = [sys.executable, "-u", "-m", "engine.main", *args,
             f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
  process = subprocess.Popen(command, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
                             env=env)
  return process, _Watcher(process, log)


def _final_result(model_dir: str):
  """(final step, test ELBO, weights fingerprint) from the run's result.json,
  or None if no run has finished there."""
  import tensorflow as tf

  from engine import runner

  try:
    result = runner.read_result(model_dir)
  except tf.errors.NotFoundError:
    return None
  return (result.final_step, result.test_metrics["elbo"],
          result.weights_fingerprint)


def _wait_for_target(target, process, watcher, model_dir, export_dir, rng,
                     timeout_s=600.0) -> bool:
  """Blocks until the target moment; False if the run ended first."""
  deadline = time.monotonic() + timeout_s
  if target == "step":
    while not watcher.training.wait(0.05):
      if process.poll() is not None or time.monotonic() > deadline:
        return False
    time.sleep(rng.uniform(0.0, 1.5))
    return process.poll() is None
  if target == "checkpoint":
    directory, pattern = model_dir, lambda n: n.endswith("_temp")
  else:
    directory, pattern = export_dir, lambda n: n.startswith(".tmp-")
  # Leftovers of an earlier kill do not count: only a write happening now.
  stale = set(_listing(directory))
  while process.poll() is None and time.monotonic() < deadline:
    if any(pattern(n) and n not in stale for n in _listing(directory)):
      return True
    time.sleep(0.001)
  return False


def _listing(directory: str) -> list[str]:
  try:
    return os.listdir(directory)
  except FileNotFoundError:
    return []


def kill_plan(kills: int) -> list[str]:
  """Targets in order: mid-training kills first (steps and checkpoint
  writes, alternating), then export kills, which only come at the end."""
  exports = max(1, kills // 4) if kills >= 3 else 0
  training = [TARGETS[i % 2] for i in range(kills - exports)]
  return training + ["export"] * exports


def verify_directory(model_dir: str, export_dir: str) -> int:
  """Restores every checkpoint and serves every export; returns how many.

  Raises:
    AssertionError: Naming the checkpoint or export that failed.
  """
  import numpy as np
  import tensorflow as tf

  from engine import checkpointing

  count = 0
  for path in checkpointing.checkpoints_on_disk(model_dir):
    try:
      trained = checkpointing.load_trained_model(model_dir, path)
    except Exception as e:  # Any failure is what this tool looks for.
      raise AssertionError(f"checkpoint {path} does not restore: {e}") from e
    assert all(np.isfinite(v.numpy()).all()
               for v in trained.vae.encoder.trainable_variables), path
    count += 1
  if os.path.isdir(export_dir):
    for version in sorted(os.listdir(export_dir)):
      if version.startswith("."):
        continue  # Temporary or retired: never served.
      path = os.path.join(export_dir, version)
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
        log=None) -> dict:
  """The whole experiment; returns a summary (see `main` for its use).

  Raises:
    AssertionError: If a checkpoint or export is corrupt, a run fails, or
      the final weights differ from the reference.
  """
  from engine import checkpointing

  log = log or open(os.devnull, "w")
  rng = random.Random(seed)
  shutil.rmtree(work_dir, ignore_errors=True)
  reference_dir = os.path.join(work_dir, "reference")
  process, watcher = _engine(engine_args, reference_dir,
                             os.path.join(reference_dir, "export"), log)
  process.wait()
  watcher.join()
  reference = _final_result(reference_dir)
  assert process.returncode == 0 and reference, (
      "the reference run failed:\n" + "".join(watcher.lines[-20:]))

  model_dir = os.path.join(work_dir, "chaos")
  export_dir = os.path.join(model_dir, "export")
  history: list[Kill] = []
  started = time.monotonic()
  restarts = 0
  plan = kill_plan(kills)
  while len(history) < kills:
    target = plan[len(history)]
    process, watcher = _engine(engine_args, model_dir, export_dir, log)
    launched = time.monotonic()
    hit = _wait_for_target(target, process, watcher, model_dir, export_dir,
                           rng)
    if process.poll() is None:
      process.send_signal(signal.SIGKILL)
    process.wait()
    watcher.join()
    restarts += 1
    if not hit and process.returncode == 0:
      # Finished before the moment came: start over from scratch so that
      # the remaining kills still land mid-run.
      shutil.rmtree(model_dir, ignore_errors=True)
      log.write(f"[chaos] run finished before a {target} kill; restarting "
                "from scratch\n")
      if target == "export":
        raise AssertionError("the export was never caught in progress")
      if len(history) == 0:
        raise AssertionError("the run finishes before the first kill; make "
                             "it longer (--train_steps)")
      continue
    assert process.returncode == -signal.SIGKILL, (
        f"run exited with {process.returncode} instead of being killed:\n"
        + "".join(watcher.lines[-20:]))
    partial = [n for n in _listing(model_dir) if n.endswith("_temp")] + [
        n for n in _listing(export_dir) if n.startswith(".tmp-")]
    checked = verify_directory(model_dir, export_dir)
    on_disk = checkpointing.checkpoints_on_disk(model_dir)
    history.append(Kill(len(history) + 1, target,
                        time.monotonic() - launched,
                        os.path.basename(on_disk[0]) if on_disk else "-",
                        ", ".join(partial) or "-", checked))
    log.write(f"[chaos] kill {len(history)}: {target}\n")

  process, watcher = _engine(engine_args, model_dir, export_dir, log)
  process.wait()
  watcher.join()
  final = _final_result(model_dir)
  assert process.returncode == 0 and final, (
      "the final restart failed:\n" + "".join(watcher.lines[-20:]))
  verify_directory(model_dir, export_dir)
  assert final[0] == reference[0], (final, reference)
  assert final[2] == reference[2], (
      f"final weights {final[2]} differ from the uninterrupted run's "
      f"{reference[2]}")
  return {"kills": history, "restarts": restarts + 1,
          "final_step": final[0], "weights": final[2],
          "reference_weights": reference[2], "test_elbo": final[1],
          "reference_test_elbo": reference[1],
          "seconds": time.monotonic() - started}


def main(argv: list[str]) -> int:
  from absl import flags

  flags.DEFINE_integer("kills", 12, "How many times to SIGKILL the run.")
  flags.DEFINE_string("work_dir", "/tmp/vae_engine_chaos",
                      "Where the reference and the killed run write "
                      "(emptied first).")
  flags.DEFINE_integer("seed", 0, "Seeds the kill moments.")
  flags.DEFINE_string("log", None, "Where the runs' output goes "
                      "(default: <work_dir>.log).")
  separator = argv.index("--") if "--" in argv else len(argv)
  flags.FLAGS(argv[:separator])
  engine_args = argv[separator + 1:]
  if any(a.startswith(("--model_dir", "--export_dir")) for a in engine_args):
    print("error: --model_dir and --export_dir are set by chaos.py",
          file=sys.stderr)
    return 2
  fv = flags.FLAGS
  log_path = fv.log or fv.work_dir.rstrip("/") + ".log"
  with open(log_path, "w") as log:
    try:
      summary = run(engine_args, fv.kills, fv.work_dir, fv.seed, log)
    except AssertionError as e:
      print(f"FAILED: {e}\n(run output: {log_path})", file=sys.stderr)
      return 1
  print(f"{'kill':>4}  {'target':<10}  {'after':>7}  {'latest ckpt':<12}  "
        f"{'partial write left':<28}  verified")
  for kill in summary["kills"]:
    print(f"{kill.number:>4}  {kill.target:<10}  {kill.seconds:6.1f}s  "
          f"{kill.latest:<12}  {kill.left_behind[:28]:<28}  "
          f"{kill.checked} ckpt/export(s) restored")
  print(f"{len(summary['kills'])} kills, {summary['restarts']} starts, "
        f"{summary['seconds']:.0f} s: final step {summary['final_step']}, "
        f"weights {summary['weights']} (uninterrupted: "
        f"{summary['reference_weights']}), test ELBO {summary['test_elbo']} "
        f"(uninterrupted: {summary['reference_test_elbo']}): identical")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
