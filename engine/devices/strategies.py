"""Builds the tf.distribute strategy a run asks for, and knows who the chief is.

Supported: `default` (no distribution), `one_device`, `mirrored` (local GPUs,
or logical CPU devices with `--cpu_devices`, a testing aid), and
`multi_worker_mirrored` (a cluster described by `TF_CONFIG`). `tpu` and
`parameter_server` fail with a clear message instead of hanging.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys

import tensorflow as tf

from engine.config import DistributionConfig
from engine.errors import UserError


def configure_devices(config: DistributionConfig) -> None:
  """Splits the host CPU into logical devices; must run before TF starts.

  Raises:
    UserError: If TensorFlow was already initialized with another layout.
  """
  if not config.cpu_devices:
    return
  cpus = tf.config.list_physical_devices("CPU")
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] *
        config.cpu_devices)
  except RuntimeError:
    if len(tf.config.list_logical_devices("CPU")) != config.cpu_devices:
      raise UserError(f"--cpu_devices={config.cpu_devices}: TensorFlow was "
                      "already initialized with another device layout") from None


def _local_devices(config: DistributionConfig) -> list[str]:
  gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
  if config.num_gpus is not None:
    if config.num_gpus > len(gpus):
      raise UserError(f"--num_gpus={config.num_gpus}: only {len(gpus)} GPU(s) "
                      "visible")
    gpus = gpus[:config.num_gpus]
  if gpus:
    return gpus
  return [d.name for d in tf.config.list_logical_devices("CPU")]


def _cluster_spec_from_env() -> dict:
  raw = os.environ.get("TF_CONFIG")
  if not raw:
    return {}
  try:
    return json.loads(raw)
  except json.JSONDecodeError as e:
    raise UserError(f"TF_CONFIG: not valid JSON ({e})") from None


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


class _PeerWatchdog:
  """Ends the process if the cluster does not assemble in time.

  MultiWorkerMirroredStrategy's constructor blocks in C++, holding the GIL,
  until every worker has connected; a peer that never starts would hang the
  job forever, and no Python thread or signal handler of this process could
  run. So the watchdog is a separate process that reports and kills us unless
  it is dismissed first.
  """

  def __init__(self, timeout_s: float, cluster: dict):
    workers = json.dumps(cluster.get("cluster", {}))
    self._message = (f"error: --peer_wait_timeout={timeout_s:g}: the cluster "
                     f"in TF_CONFIG ({workers}) did not assemble; a peer never "
                     "started or cannot be reached")
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


@functools.lru_cache(maxsize=None)
def make_strategy(config: DistributionConfig) -> tf.distribute.Strategy:
  """Returns the strategy `config.strategy` names, one instance per process.

  Memoized: two instances of a collective strategy in one process draw the
  same collective instance keys, and their all-reduces then collide.

  Raises:
    UserError: For a strategy that cannot start here, with the reason.
  """
  name = config.strategy
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    return tf.distribute.OneDeviceStrategy(_local_devices(config)[0])
  if name == "mirrored":
    return tf.distribute.MirroredStrategy(_local_devices(config))
  if name == "multi_worker_mirrored":
    cluster = _cluster_spec_from_env()
    if not cluster.get("cluster") or not cluster.get("task"):
      raise UserError("--strategy=multi_worker_mirrored: TF_CONFIG must "
                      "describe the cluster and this task (see README, "
                      "'Cluster jobs'); for one machine use "
                      "--strategy=mirrored")
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=config.collective_timeout_s)
    with _PeerWatchdog(config.peer_wait_timeout_s, cluster):
      return tf.distribute.MultiWorkerMirroredStrategy(
          communication_options=options)
  if name == "tpu":
    try:
      resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
          tpu=config.tpu or None)
      tf.config.experimental_connect_to_cluster(resolver)
      tf.tpu.experimental.initialize_tpu_system(resolver)
      return tf.distribute.TPUStrategy(resolver)
    except Exception as e:  # TPU discovery raises many types.
      first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
      raise UserError(f"--strategy=tpu: no TPU could be reached ({first})"
                      ) from None
  if name == "parameter_server":
    raise UserError(
        "--strategy=parameter_server: not supported: it trains "
        "asynchronously through a ClusterCoordinator, which this engine's "
        "synchronous, exactly-resumable loop does not use; use "
        "--strategy=multi_worker_mirrored for clusters")
  raise UserError(f"--strategy={name}: unknown strategy")


@dataclasses.dataclass(frozen=True)
class TaskRole:
  """This process's place in the job.

  Attributes:
    is_chief: Writes checkpoints, summaries, figures and exports.
    task_type: `worker`, `chief` or None (single process).
    task_id: Index within the task type.
  """

  is_chief: bool
  task_type: str | None = None
  task_id: int = 0

  def scratch_dir(self, model_dir: str) -> str:
    """Where a non-chief writes what must be written but is not kept."""
    return os.path.join(model_dir, ".scratch", f"{self.task_type}_"
                        f"{self.task_id}")


def task_role(strategy: tf.distribute.Strategy) -> TaskRole:
  """The chief is the `chief` task, or worker 0 when the cluster has none."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return TaskRole(is_chief=True)
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
  is_chief = (task_type == "chief" or
              (not has_chief and task_type == "worker" and task_id == 0))
  return TaskRole(is_chief, task_type, task_id)
