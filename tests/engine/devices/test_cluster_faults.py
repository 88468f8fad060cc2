"""A multi-worker job's faults end each worker with one `error:` line (no
TensorFlow log lines, stack fragments or traceback) and a documented exit
status, soon after the fault: real processes on 127.0.0.1 with TF_CONFIG."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf

from engine.cli import launch_local
from engine.devices import cluster
from tests.helpers import REPO_ROOT
from tests.helpers import assert_one_line_error

pytestmark = pytest.mark.e2e

# What must never reach a user's terminal.
_NOISE = ("E0000", "W0000", "Traceback", "Detected at node", 'File "',
          "[[", "{{node", "grpc_status")


def _worker(index, ports, data_dir, model_dir, *flags):
  """One engine process as task `index` of a cluster on `ports`; its exit
  moment is recorded in `.ended`."""
  config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
            "task": {"type": "worker", "index": index}}
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CONFIG=json.dumps(config))
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # As a user starts it.
  process = subprocess.Popen(
      [sys.executable, "-m", "engine.main", "--strategy=multi_worker_mirrored",
       f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--model=dense",
       "--batch_size=32", "--steps_per_loop=5", "--log_every=5",
       "--checkpoint_every=0", "--nofigures", *flags],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
      cwd=REPO_ROOT)

  def wait():
    process.wait()
    process.ended = time.monotonic()
  threading.Thread(target=wait, daemon=True).start()
  return process


class _Result:
  def __init__(self, process, timeout=300):
    self.stdout, self.stderr = process.communicate(timeout=timeout)
    self.returncode = process.returncode
    while not hasattr(process, "ended"):
      time.sleep(0.01)
    self.ended = process.ended


def _clean_error(result, *fragments):
  line = assert_one_line_error(result, *fragments)
  for noise in _NOISE:
    assert noise not in result.stderr, result.stderr
  return line


def _kill(processes):
  for p in processes:
    if p.poll() is None:
      p.kill()
      p.wait()


@pytest.mark.slow
def test_two_workers_given_the_same_task_index(small_mnist_dir, tmp_path):
  ports = launch_local.free_ports(2)
  processes = [_worker(0, ports, small_mnist_dir, tmp_path / f"run{i}",
                       "--peer_wait_timeout=10") for i in range(2)]
  try:
    results = [_Result(p) for p in processes]
  finally:
    _kill(processes)
  # Which of the two got the port first is a race; the other is named.
  duplicate, other = sorted(results, key=lambda r: -r.returncode)
  assert (duplicate.returncode, other.returncode) == (2, 1), (
      duplicate.stderr, other.stderr)
  line = _clean_error(duplicate, "error: TF_CONFIG: task worker:0 cannot "
                      f"listen on port {ports[0]}", "in use",
                      "same task index (0)", "its own task index")
  assert line.count("error:") == 1
  # The worker that did start waits for task 1, which nobody started.
  _clean_error(other, "--peer_wait_timeout=10", "did not assemble",
               f"worker:1 (127.0.0.1:{ports[1]}) never connected")
  assert other.ended - duplicate.ended < 30


@pytest.mark.slow
def test_a_stopped_worker_ends_its_peer_within_30_s(small_mnist_dir,
                                                     tmp_path):
  ports = launch_local.free_ports(2)
  processes = [_worker(i, ports, small_mnist_dir, tmp_path / "run",
                       "--train_steps=1000000") for i in range(2)]
  try:
    for line in processes[0].stdout:  # Until steps run.
      if line.startswith("step "):
        break
    assert processes[0].poll() is None, processes[0].stderr.read()
    processes[1].send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    survivor = _Result(processes[0], timeout=120)
    processes[1].send_signal(signal.SIGCONT)  # It finds its peer gone.
    resumed = _Result(processes[1], timeout=120)
  finally:
    for p in processes:
      if p.poll() is None:
        p.send_signal(signal.SIGCONT)
    _kill(processes)
  assert survivor.returncode == 1, survivor.stderr
  assert survivor.ended - stopped_at < 30
  _clean_error(survivor, "error: training stopped: a worker failed or "
               "became unreachable", f"worker:1 (127.0.0.1:{ports[1]})",
               "restart the job")
  assert resumed.returncode == 1, resumed.stderr
  _clean_error(resumed, "error: training stopped:", "restart the job")


@pytest.mark.slow
@pytest.mark.parametrize("index,missing", [
    (0, "worker:1 (127.0.0.1:{1}) never connected"),
    (1, "worker:0 (127.0.0.1:{0}), the coordination leader, could not be "
        "reached")])
def test_a_worker_that_never_starts_is_named(small_mnist_dir, tmp_path,
                                              index, missing):
  ports = launch_local.free_ports(2)
  started = time.monotonic()
  process = _worker(index, ports, small_mnist_dir, tmp_path,
                    "--peer_wait_timeout=10")
  try:
    result = _Result(process, timeout=240)
  finally:
    _kill([process])
  assert result.returncode == 1, result.stderr  # Not a watchdog's 137.
  _clean_error(result, "error: --peer_wait_timeout=10: the cluster in "
               "TF_CONFIG did not assemble", missing.format(*ports),
               "start every worker TF_CONFIG lists")
  assert result.ended - started < 180  # Start-up, then 10 s (not 30 s more).


# TensorFlow's messages, as TF 2.21 words them.
_STACK = ("Graph execution error:\n\nDetected at node while/CollectiveReduceV2"
          " defined at (most recent call last):\n  File \"<frozen runpy>\", "
          "line 198, in _run_module_as_main\n\n  File \"/x/trainer.py\", line "
          "260, in _train_loop\n\n")
_TAIL = ("The error could be from a previous operation. Restart your program "
         "to reset.\n\t [[{{node while/CollectiveReduceV2}}]] "
         "[Op:__inference__train_loop_2488]")
_CLUSTER = {"cluster": {"worker": ["127.0.0.1:40001", "127.0.0.1:40002"]}}


@pytest.mark.parametrize("error,expected", [
    (tf.errors.UnavailableError(None, None, _STACK + (
        "Collective ops is aborted by: Error reported from /job:worker/task:1"
        ": The following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:1\nThe tasks have crashed. Check the task "
        "logs for an earlier error.\n") + _TAIL),
     "worker:1 (127.0.0.1:40002) stopped sending heartbeats (it died, was "
     "stopped, or cannot be reached)"),
    (tf.errors.UnavailableError(None, None, _STACK + (
        "Collective ops is aborted by: failed to connect to all addresses; "
        "last error: UNKNOWN: ipv4:127.0.0.1:40001: Failed to connect to "
        "remote host: Connection refused\nAdditional GRPC error information "
        "from remote target /job:worker/replica:0/task:0 while calling "
        "/tensorflow.WorkerService/CompleteInstance:\n:UNKNOWN:Error received"
        " from peer  {grpc_status:14}\n") + _TAIL),
     "worker:0 (127.0.0.1:40001) cannot be reached (Connection refused): it "
     "died or is unreachable"),
    (tf.errors.DeadlineExceededError(None, None, _STACK + (
        "Collective ops timed out after 30s\n") + _TAIL),
     "DeadlineExceededError: Collective ops timed out after 30s"),
])
def test_peer_failures_are_told_without_tensorflow_s_wrapping(error,
                                                               expected):
  assert cluster.describe_peer_failure(error, _CLUSTER) == expected


def test_a_taken_port_is_named_before_tensorflow_starts():
  with launch_local.socket.socket() as holder:
    holder.bind(("", 0))
    holder.listen()
    port = holder.getsockname()[1]
    spec = {"cluster": {"worker": ["127.0.0.1:1", f"127.0.0.1:{port}"]},
            "task": {"type": "worker", "index": 1}}
    with pytest.raises(cluster.UserError, match=(
        f"TF_CONFIG: task worker:1 cannot listen on port {port} .* same task "
        r"index \(1\)")):
      cluster.check_own_port(spec)


def test_a_task_outside_the_cluster_is_named():
  with pytest.raises(cluster.UserError, match="task worker:2 is not in the "
                     "cluster .* 0 to 1"):
    cluster.own_task({"cluster": {"worker": ["a:1", "b:2"]},
                      "task": {"type": "worker", "index": 2}})
