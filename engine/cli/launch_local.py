r"""Starts an N-worker `multi_worker_mirrored` job as local processes.

    vae-engine launch_local --num_workers=2 -- \
        --model=conv --data_dir=path/to/mnist --model_dir=/tmp/mw --epochs=1

Each worker is `python -m engine.main <flags after -->
--strategy=multi_worker_mirrored` with its own `TF_CONFIG` naming ports on
127.0.0.1. TensorFlow's gRPC server listens on every interface whatever
`TF_CONFIG` says, so the workers of one job run inside one private network
namespace whose only interface is loopback (`--private_network`, the
default): nothing outside this machine, nor any process on it outside the
job's namespace, can reach them. A small holder process creates the
namespace (`unshare --net`, with `--map-root-user` when not root) and
brings `lo` up; each worker enters it (`nsenter`, which execs the worker
without forking, so every worker is still a direct child of the launcher);
the holder ends once they are in, or when the launcher dies, and the
namespace goes with the last worker. Where the system refuses a namespace
(a container without the privilege, no unprivileged user namespaces), or
with `--noprivate_network`, one `warning: launch_local: ...` line on stderr
(once per process) names the ports that then listen on all interfaces, and
the job runs as before.

Output is prefixed with the worker's index. If a worker fails, the others
get `--grace_period` seconds to notice and exit by themselves, then are
stopped; the launcher exits with the first non-zero status.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

from absl import flags

from engine import startup
from engine.cli import tool

# Where the `engine` package is (a clone, or site-packages): what the
# workers put on their import path.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Runs inside the new namespace: brings loopback up (SIOCGIFFLAGS, then
# SIOCSIFFLAGS with IFF_UP; no `ip` binary needed), says so, and holds the
# namespace open until its stdin closes (the launcher is done, or dead).
_HOLDER = r"""
import fcntl, socket, struct, sys
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
  flags = struct.unpack("16sH22x", fcntl.ioctl(
      s, 0x8913, struct.pack("16sH22x", b"lo", 0)))[1]
  fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"lo", flags | 1))
print("ready", flush=True)
sys.stdin.read()
"""
_warned = False  # The fallback's warning is printed once per process.


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


def tf_configs(num_workers: int, ports: Optional[list[int]] = None
               ) -> list[str]:
  """One TF_CONFIG per worker for a localhost cluster (on `ports`, else on
  free ones)."""
  workers = [f"127.0.0.1:{port}" for port in ports or free_ports(num_workers)]
  return [json.dumps({"cluster": {"worker": workers},
                      "task": {"type": "worker", "index": index}})
          for index in range(num_workers)]


def _namespace_of(pid) -> Optional[str]:
  try:
    return os.readlink(f"/proc/{pid}/ns/net")
  except OSError:
    return None


class PrivateNetwork:
  """A network namespace with only loopback, held open by a holder process
  while the workers enter it."""

  def __init__(self, holder: subprocess.Popen, user_namespace: bool):
    self.holder = holder
    self.namespace = _namespace_of(holder.pid)
    self.prefix = ["nsenter", f"--target={holder.pid}", "--net"]
    if user_namespace:
      self.prefix[2:2] = ["--user", "--preserve-credentials"]

  @classmethod
  def open(cls) -> tuple[Optional["PrivateNetwork"], str]:
    """(the namespace, "") or (None, why the system refused one)."""
    if not shutil.which("unshare") or not shutil.which("nsenter"):
      return None, "no unshare or nsenter command"
    # Root needs only a network namespace; anyone else, a user namespace
    # too (where unprivileged ones are allowed). Root in a container
    # without CAP_SYS_ADMIN may still be allowed the second.
    attempts = ([False] if os.geteuid() == 0 else []) + [True]
    why = ""
    for user_namespace in attempts:
      command = ["unshare", "--net",
                 *(["--map-root-user"] if user_namespace else []),
                 "--", sys.executable, "-c", _HOLDER]
      holder = subprocess.Popen(command, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
      if holder.stdout.readline().strip() == "ready":
        network = cls(holder, user_namespace)
        if network.namespace:
          return network, ""
        network.close()
        return None, f"/proc/{holder.pid}/ns/net cannot be read"
      holder.stdin.close()
      holder.wait()
      lines = holder.stderr.read().strip().splitlines() or [
          f"exit status {holder.returncode}"]
      why = lines[-1].removeprefix("unshare: ").removeprefix(
          "unshare failed: ")
    return None, f"unshare --net: {why}"

  def wait_entered(self, processes, timeout_s: float = 30.0) -> None:
    """Until every worker that still runs is in the namespace."""
    deadline = time.monotonic() + timeout_s
    for p in processes:
      while (p.poll() is None and _namespace_of(p.pid) != self.namespace
             and time.monotonic() < deadline):
        time.sleep(0.01)

  def close(self) -> None:
    """Ends the holder; the namespace lives on while a worker is in it."""
    if self.holder.poll() is None:
      self.holder.stdin.close()
      try:
        self.holder.wait(timeout=5)
      except subprocess.TimeoutExpired:
        self.holder.kill()
        self.holder.wait()
    for stream in (self.holder.stdout, self.holder.stderr):
      stream.close()


class Workers(list):
  """The workers' processes, in task order (a list of `Popen`s).

  Attributes:
    ports: Each worker's port, from its TF_CONFIG.
    private: Whether they run in a private network namespace.
  """

  ports: list[int]
  private: bool


def _warn(reason: str, ports: list[int]) -> None:
  global _warned
  if not _warned:
    _warned = True
    print(f"warning: launch_local: no private network namespace here "
          f"({reason}); the workers' gRPC servers listen on all interfaces, "
          f"on ports {', '.join(map(str, ports))}", file=sys.stderr,
          flush=True)


def start_workers(num_workers: int, engine_args: list[str], stdout=None,
                  private_network: bool = True) -> Workers:
  """Starts the workers; each gets `engine_args` and its TF_CONFIG, and all
  of them one private network namespace (unless `private_network` is False
  or the system refuses one: then one warning line on stderr)."""
  ports = free_ports(num_workers)
  configs = tf_configs(num_workers, ports)
  network, reason = (PrivateNetwork.open() if private_network
                     else (None, "--noprivate_network"))
  if network is None:
    _warn(reason, ports)
  processes = Workers()
  processes.ports, processes.private = ports, network is not None
  try:
    for config in configs:
      env = dict(os.environ, TF_CONFIG=config,
                 PYTHONPATH=os.pathsep.join(
                     [PACKAGE_ROOT] + [p for p in [os.environ.get("PYTHONPATH")]
                                    if p]))
      if not startup.USER_SET_LOG_LEVEL:  # Our default, not the user's: the
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # workers choose their own.
      processes.append(subprocess.Popen(
          [*(network.prefix + ["--"] if network else []),
           sys.executable, "-m", "engine.main", *engine_args,
           *([] if "--strategy=multi_worker_mirrored" in engine_args
             else ["--strategy=multi_worker_mirrored"])],
          env=env, stdout=stdout, stderr=subprocess.STDOUT,
          text=True))
    if network:
      network.wait_entered(processes)
  finally:
    if network:
      network.close()
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
  flags.DEFINE_boolean("private_network", True,
                       "Run the workers in a private network namespace with "
                       "only loopback (TensorFlow's gRPC servers listen on "
                       "all interfaces). False, or where the system refuses "
                       "one: the ports are open on every interface (one "
                       "warning line says so).")


def main(argv: list[str]) -> int:
  engine_args = argv[1:]  # What follows `--`.
  processes = start_workers(flags.FLAGS.num_workers, engine_args,
                            stdout=subprocess.PIPE,
                            private_network=flags.FLAGS.private_network)
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
