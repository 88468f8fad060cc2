"""A `multi_worker_mirrored` cluster's faults, each told in one line.

Before the strategy starts: this task's own port must be free (else a second
worker was given the same task index, or another program holds the port:
`UserError`, exit 2), and TensorFlow's coordination service is configured so
that the cluster's assembly itself times out after `--peer_wait_timeout`
(every task must register by then, `cluster_register_with_barrier`) and a
peer that stops sending heartbeats is noticed after about `_HEARTBEAT_S`.
A peer that never connected, and one that failed or stopped answering later,
are `ClusterFailure`s (exit 1) naming the task and its address, without
TensorFlow's stack fragments and gRPC details. `PeerWatchdog` remains the
last resort should TensorFlow's own timeout not fire (a SIGKILL, 137).
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys

from engine.errors import UserError, reason

_HEARTBEAT_S = 10.0  # TensorFlow's default; here explicit and bounded.
_TASK = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")
_ADDRESS = re.compile(r"ipv[46]:\[?([\w.:]+?)\]?:(\d+)\b")


class ClusterFailure(Exception):
  """A peer failed, stopped answering, or never connected (exit 1)."""


def own_task(cluster: dict) -> tuple[str, int, str]:
  """(task type, index, address) of this task in TF_CONFIG.

  Raises:
    UserError: If the task is not in the cluster.
  """
  task = cluster.get("task", {})
  task_type, index = task.get("type"), task.get("index", 0)
  tasks = cluster["cluster"].get(task_type) or []
  if not isinstance(index, int) or not 0 <= index < len(tasks):
    raise UserError(f"TF_CONFIG: task {task_type}:{index} is not in the "
                    f"cluster ({json.dumps(cluster['cluster'])}); give each "
                    f"worker its own index, 0 to {len(tasks) - 1}")
  return task_type, index, tasks[index]


def port_in_use(cluster: dict) -> UserError:
  """The error for a task whose port is taken."""
  task_type, index, address = own_task(cluster)
  port = address.rsplit(":", 1)[-1]
  return UserError(
      f"TF_CONFIG: task {task_type}:{index} cannot listen on port {port} "
      f"(its address {address}): the port is in use, by a worker given the "
      f"same task index ({index}) or by another program; give every worker "
      "its own task index and a free port")


def check_own_port(cluster: dict) -> None:
  """TensorFlow's gRPC server listens on every interface at this task's
  port; fails now, by name, if that port is taken.

  Raises:
    UserError: If the port is in use.
  """
  _, _, address = own_task(cluster)
  try:
    port = int(address.rsplit(":", 1)[1])
  except (IndexError, ValueError):
    raise UserError(f"TF_CONFIG: {address!r} is not host:port") from None
  with socket.socket() as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # As gRPC.
    try:
      probe.bind(("", port))
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise port_in_use(cluster) from None


def configure_coordination(cluster: dict, peer_wait_s: float) -> None:
  """What MultiWorkerMirroredStrategy would configure, plus timeouts: the
  cluster must assemble within `peer_wait_s`, heartbeats stop after
  `_HEARTBEAT_S`. Skipped where TensorFlow's internals differ."""
  try:
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    from tensorflow.python.training import server_lib

    spec = server_lib.ClusterSpec(cluster["cluster"])
    jobs = [coordination_config_pb2.CoordinatedJob(
        name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    ctx = context.context()
    ctx.configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=int(peer_wait_s * 1000),
        heartbeat_timeout_in_ms=int(_HEARTBEAT_S * 1000))
    ctx.coordination_service.cluster_register_with_barrier = True
  except (ImportError, AttributeError, ValueError):
    pass


def _tasks_named(text: str) -> list[str]:
  names = []
  for job, index in _TASK.findall(text):
    if f"{job}:{index}" not in names:
      names.append(f"{job}:{index}")
  return names


def _with_address(task: str, cluster: dict) -> str:
  job, index = task.split(":")
  tasks = cluster.get("cluster", {}).get(job) or []
  return f"{task} ({tasks[int(index)]})" if int(index) < len(tasks) else task


def _task_at(host: str, port: str, cluster: dict) -> str:
  for job, tasks in cluster.get("cluster", {}).items():
    for index, address in enumerate(tasks):
      if address.rsplit(":", 1)[-1] == port and (
          address.rsplit(":", 1)[0].strip("[]") in (host, "localhost")):
        return f"{job}:{index} ({address})"
  return f"the worker at {host}:{port}"


def never_connected(error: Exception, cluster: dict,
                    peer_wait_s: float) -> ClusterFailure:
  """The failure for a cluster that did not assemble in time."""
  text = str(getattr(error, "message", None) or error)
  _, after, names = text.partition("timed out task names:")
  missing = _tasks_named(names.split("Additional GRPC")[0]) if after else []
  if missing:
    who = ", ".join(_with_address(t, cluster) for t in missing)
    what = f"{who} never connected"
  else:  # This task's registration with the leader itself timed out.
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.training import server_lib
    leader = multi_worker_util.coordination_leader(
        server_lib.ClusterSpec(cluster["cluster"]))
    who = _with_address(_tasks_named(leader)[0], cluster)
    what = f"{who}, the coordination leader, could not be reached"
  return ClusterFailure(
      f"--peer_wait_timeout={peer_wait_s:g}: the cluster in TF_CONFIG did "
      f"not assemble: {what}; start every worker TF_CONFIG lists (the same "
      "command, each with its own task index), check that their addresses "
      "reach each other, or raise --peer_wait_timeout")


def describe_peer_failure(error: Exception, cluster: dict) -> str:
  """What went wrong with a peer during training, for one line."""
  text = str(getattr(error, "message", None) or error)
  _, unhealthy, rest = text.partition("stopped sending heartbeats")
  if unhealthy:
    tasks = _tasks_named(rest.split("\n\n")[0].split("The tasks")[0])
    who = ", ".join(_with_address(t, cluster) for t in tasks) or "a worker"
    return (f"{who} stopped sending heartbeats (it died, was stopped, or "
            "cannot be reached)")
  address = _ADDRESS.search(text)
  if address and ("Connection refused" in text or "failed to connect" in text):
    what = ("Connection refused" if "Connection refused" in text
            else "cannot connect")
    return (f"{_task_at(*address.groups(), cluster)} cannot be reached "
            f"({what}): it died or is unreachable")
  lines = [line for line in text.splitlines()
           if not line.startswith(("Additional GRPC", ":UNKNOWN:",
                                   "The error could be from"))]
  return f"{type(error).__name__}: {reason(_Text(chr(10).join(lines)))}"


class _Text(Exception):
  """Text for `errors.reason`."""


_WATCHDOG = """
import os, signal, sys, time
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
  if os.getppid() != int(sys.argv[2]):
    sys.exit(0)  # The parent is gone.
  time.sleep(0.2)
print(sys.argv[3], file=sys.stderr, flush=True)
os.kill(int(sys.argv[2]), signal.SIGKILL)
"""


class PeerWatchdog:
  """Ends the process if the cluster does not assemble in time.

  MultiWorkerMirroredStrategy's constructor blocks in C++, holding the GIL,
  until every worker has connected; should TensorFlow's own registration
  timeout not fire, no Python thread or signal handler of this process could
  run. So the watchdog is a separate process that reports and kills us
  (SIGKILL: exit 137) unless it is dismissed first.
  """

  def __init__(self, timeout_s: float, peer_wait_s: float, cluster: dict):
    workers = json.dumps(cluster.get("cluster", {}))
    self._message = (f"error: --peer_wait_timeout={peer_wait_s:g}: the "
                     f"cluster in TF_CONFIG ({workers}) did not assemble; a "
                     "peer never started or cannot be reached")
    self._timeout_s = timeout_s
    self._process = None

  def __enter__(self):
    self._process = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(self._timeout_s),
         str(os.getpid()), self._message])
    return self

  def __exit__(self, *exc):
    self._process.kill()
    self._process.wait()
