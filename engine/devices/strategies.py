"""Builds the tf.distribute strategy a run asks for, and knows who the chief is.

Supported: `default` (no distribution), `one_device`, `mirrored` (local GPUs,
or logical CPU devices with `--cpu_devices`, a testing aid), and
`multi_worker_mirrored` (a cluster described by `TF_CONFIG`). `tpu` and
`parameter_server` fail with a clear message instead of hanging. A
cluster's faults (a taken port, a peer that never connects or fails) are
told by `engine.devices.cluster`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import tensorflow as tf

from engine.config import DistributionConfig
from engine.devices import cluster
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


# How long after --peer_wait_timeout the watchdog kills a worker whose
# TensorFlow did not time out by itself.
_WATCHDOG_MARGIN_S = 30.0


def _multi_worker(config: DistributionConfig) -> tf.distribute.Strategy:
  """A MultiWorkerMirroredStrategy for the cluster in TF_CONFIG.

  Raises:
    UserError: For a TF_CONFIG this task cannot start from (its port taken).
    cluster.ClusterFailure: If a peer did not connect in time.
  """
  spec = _cluster_spec_from_env()
  if not spec.get("cluster") or not spec.get("task"):
    raise UserError("--strategy=multi_worker_mirrored: TF_CONFIG must "
                    "describe the cluster and this task (see docs/cluster.md, "
                    "'Cluster jobs'); for one machine use "
                    "--strategy=mirrored")
  cluster.check_own_port(spec)
  cluster.configure_coordination(spec, config.peer_wait_timeout_s)
  options = tf.distribute.experimental.CommunicationOptions(
      timeout_seconds=config.collective_timeout_s)
  with cluster.PeerWatchdog(config.peer_wait_timeout_s + _WATCHDOG_MARGIN_S,
                            config.peer_wait_timeout_s, spec):
    try:
      return tf.distribute.MultiWorkerMirroredStrategy(
          communication_options=options)
    except tf.errors.UnknownError as e:
      if "Could not start gRPC server" in str(e):  # Taken since the check.
        raise cluster.port_in_use(spec) from None
      raise
    except (tf.errors.DeadlineExceededError,
            tf.errors.UnavailableError) as e:
      raise cluster.never_connected(e, spec, config.peer_wait_timeout_s
                                    ) from None


def describe_peer_failure(error: Exception) -> str:
  """A peer's failure during training, in words (for one line)."""
  return cluster.describe_peer_failure(error, _cluster_spec_from_env())


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
    return _multi_worker(config)
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
