"""Starts an N-worker `multi_worker_mirrored` job as local processes.

    python tools/launch_local.py --num_workers=2 -- \
        --model=conv --data_dir=path/to/mnist --model_dir=/tmp/mw --epochs=1

Each worker is `python -m engine.main <flags after --> \
--strategy=multi_worker_mirrored` with its own `TF_CONFIG` naming free ports on
127.0.0.1 (nothing listens beyond loopback). Output is prefixed with the
worker's index. If a worker fails, the others get `--grace_period` seconds to
notice and exit by themselves, then are stopped; the launcher exits with the
first non-zero status.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

from absl import flags

from engine.cli import tool

# Where the `engine` package is (a clone, or site-packages): what the
# workers put on their import path.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def free_ports(count: int) -> list[int]:
  """Ports on 127.0.0.1 free right now (held open together so they differ)."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket()
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_configs(num_workers: int) -> list[str]:
  """One TF_CONFIG per worker for a localhost cluster."""
  workers = [f"127.0.0.1:{port}" for port in free_ports(num_workers)]
  return [json.dumps({"cluster": {"worker": workers},
                      "task": {"type": "worker", "index": index}})
          for index in range(num_workers)]


def start_workers(num_workers: int, engine_args: list[str],
                  stdout=None) -> list[subprocess.Popen]:
  """Starts the workers; each gets `engine_args` and its TF_CONFIG."""
  processes = []
  for config in tf_configs(num_workers):
    env = dict(os.environ, TF_CONFIG=config,
               PYTHONPATH=os.pathsep.join(
                   [PACKAGE_ROOT] + [p for p in [os.environ.get("PYTHONPATH")]
                                  if p]))
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "engine.main", *engine_args,
         "--strategy=multi_worker_mirrored"],
        env=env, stdout=stdout, stderr=subprocess.STDOUT,
        text=True))
  return processes


def _relay(index: int, process: subprocess.Popen) -> None:
  for line in process.stdout:
    print(f"[worker {index}] {line}", end="", flush=True)


def supervise(processes: list[subprocess.Popen],
              grace_period_s: float) -> int:
  """Waits for the workers; stops the rest once one has failed.

  Returns:
    0 if all succeeded, else the first non-zero exit status.
  """
  failed_at, status = None, 0
  while any(p.poll() is None for p in processes):
    for p in processes:
      code = p.poll()
      if code not in (None, 0) and failed_at is None:
        failed_at, status = time.monotonic(), code
    if failed_at is not None and time.monotonic() - failed_at > grace_period_s:
      for p in processes:
        if p.poll() is None:
          p.kill()
    time.sleep(0.2)
  for p in processes:
    if status == 0 and p.returncode != 0:
      status = p.returncode
  return status


def define_flags() -> None:
  flags.DEFINE_integer("num_workers", 2, "Workers to start.", lower_bound=1)
  flags.DEFINE_float("grace_period", 60.0,
                     "Seconds the other workers get after one fails.",
                     lower_bound=0)


def main(argv: list[str]) -> int:
  engine_args = argv[1:]  # What follows `--`.
  processes = start_workers(flags.FLAGS.num_workers, engine_args,
                            stdout=subprocess.PIPE)
  relays = [threading.Thread(target=_relay, args=(i, p), daemon=True)
            for i, p in enumerate(processes)]
  for relay in relays:
    relay.start()
  status = supervise(processes, flags.FLAGS.grace_period)
  for relay in relays:
    relay.join(timeout=5)
  return status



def cli() -> None:
  """The `vae-engine launch_local` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
