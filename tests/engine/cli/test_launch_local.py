"""`launch_local`: the workers of a local job listen inside one private
network namespace (only loopback), or, where the system refuses one, one
warning line names the ports that listen on every interface."""

import ipaddress
import json
import os
import re
import stat
import subprocess
import sys
import time

import pytest

from engine.cli import launch_local
from engine.run import finish
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.e2e

_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp{,6}.


def _address(hex_address: str):
  raw = bytes.fromhex(hex_address)
  # The kernel prints each 32-bit word in host (little-endian) order.
  raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
  return ipaddress.ip_address(raw)


def listening(proc_net: str = "/proc/self/net") -> dict[int, set]:
  """{port: {listening addresses}} of a network namespace's TCP sockets."""
  ports = {}
  for name in ("tcp", "tcp6"):
    try:
      lines = open(os.path.join(proc_net, name)).read().splitlines()[1:]
    except FileNotFoundError:  # No IPv6 here.
      continue
    for line in lines:
      local, state = line.split()[1], line.split()[3]
      if state == _LISTEN:
        host, port = local.split(":")
        ports.setdefault(int(port, 16), set()).add(_address(host))
  return ports


def _is_loopback(address) -> bool:
  mapped = getattr(address, "ipv4_mapped", None)
  return address.is_loopback or bool(mapped and mapped.is_loopback)


def _workers_of(launcher_pid: int) -> dict[int, list[int]]:
  """{worker pid: its TF_CONFIG ports} for the launcher's children running
  the engine (each Popen'd worker itself, not an nsenter in between)."""
  workers = {}
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
      cmdline = open(f"/proc/{entry}/cmdline").read().split("\0")
      environ = open(f"/proc/{entry}/environ", "rb").read().split(b"\0")
    except OSError:
      continue
    if int(fields[1]) != launcher_pid or "engine.main" not in cmdline:
      continue
    config = next((e[len(b"TF_CONFIG="):] for e in environ
                   if e.startswith(b"TF_CONFIG=")), None)
    if config:
      workers[int(entry)] = [int(a.rsplit(":", 1)[1]) for a in
                             json.loads(config)["cluster"]["worker"]]
  return workers


def _engine_args(data_dir, model_dir):
  return ["--model=dense", "--train_steps=60", "--batch_size=32",
          "--steps_per_loop=10", "--log_every=20", "--nofigures",
          f"--data_dir={data_dir}", f"--model_dir={model_dir}"]


def _launch(*args, env=None):
  # As a user starts it: without the log level this test process's own
  # import of the engine set.
  env = dict(env or os.environ, PYTHONPATH=REPO_ROOT)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return subprocess.Popen(
      [sys.executable, "-m", "engine.main", "launch_local", *args],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
      cwd=REPO_ROOT)


@pytest.mark.slow
def test_a_local_job_listens_only_inside_its_private_namespace(
    small_mnist_dir, tmp_path):
  network, why = launch_local.PrivateNetwork.open()
  if network is None:
    pytest.skip(f"no private network namespace here ({why})")
  network.close()
  model_dir = tmp_path / "run"
  launcher = _launch("--num_workers=2", "--",
                     *_engine_args(small_mnist_dir, model_dir))
  host_namespace = os.readlink("/proc/self/ns/net")
  seen_inside, workers = set(), {}
  try:
    while launcher.poll() is None:
      workers.update(_workers_of(launcher.pid))
      ports = {p for job in workers.values() for p in job}
      exposed = {port: addresses for port, addresses in listening().items()
                 if port in ports and not all(map(_is_loopback, addresses))}
      assert not exposed, f"listening in the host namespace: {exposed}"
      for pid in list(workers):
        try:
          assert os.readlink(f"/proc/{pid}/ns/net") != host_namespace
          seen_inside |= set(listening(f"/proc/{pid}/net")) & ports
        except FileNotFoundError:  # That worker has exited.
          pass
      time.sleep(0.2)
    out, err = launcher.communicate(timeout=60)
  finally:
    if launcher.poll() is None:
      launcher.kill()
  assert launcher.returncode == 0, out[-3000:] + err[-3000:]
  assert "warning: launch_local" not in err, err
  assert len(workers) == 2 and all(len(p) == 2 for p in workers.values())
  # Their servers did listen, on their ports, inside the namespace.
  assert seen_inside == set(next(iter(workers.values()))), seen_inside
  assert finish.read_result(str(model_dir)).final_step == 60
  assert re.search(r"\[worker 0\] done: step 60", out), out[-3000:]


def test_without_a_namespace_one_warning_names_the_ports_open_to_all(
    small_mnist_dir, tmp_path, capfd, monkeypatch):
  monkeypatch.setattr(launch_local, "_warned", False)
  processes = launch_local.start_workers(
      2, _engine_args(small_mnist_dir, tmp_path / "run"),
      stdout=subprocess.DEVNULL, private_network=False)
  try:
    assert not processes.private
    warnings = [line for line in capfd.readouterr().err.splitlines()
                if line.startswith("warning:")]
    assert warnings == [
        "warning: launch_local: no private network namespace here "
        "(--noprivate_network); the workers' gRPC servers listen on all "
        f"interfaces, on ports {processes.ports[0]}, {processes.ports[1]}"]
    # What the namespace prevents: the servers listen beyond loopback.
    deadline = time.monotonic() + 240
    while True:
      open_ports = {port for port, addresses in listening().items()
                    if not all(map(_is_loopback, addresses))}
      if set(processes.ports) <= open_ports:
        break
      assert time.monotonic() < deadline, "the servers never listened"
      assert all(p.poll() is None for p in processes)
      time.sleep(0.2)
  finally:
    for p in processes:
      p.kill()
      p.wait()


def test_a_refused_namespace_is_one_warning_and_the_job_runs_as_before(
    tmp_path, capfd, monkeypatch):
  fake = tmp_path / "bin" / "unshare"
  fake.parent.mkdir()
  fake.write_text("#!/bin/sh\necho 'unshare: unshare failed: Operation not "
                  "permitted' >&2\nexit 1\n")
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setattr(launch_local, "_warned", False)
  # A bad engine flag: each worker exits 2 at once, as it would without the
  # launcher (what matters here is what the launcher says first).
  processes = launch_local.start_workers(2, ["--model=resnet"],
                                         stdout=subprocess.PIPE)
  outputs = [p.communicate(timeout=300)[0] for p in processes]
  assert not processes.private
  assert [p.returncode for p in processes] == [2, 2], outputs
  warnings = [line for line in capfd.readouterr().err.splitlines()
              if line.startswith("warning")]
  assert warnings == [
      "warning: launch_local: no private network namespace here (unshare "
      "--net: Operation not permitted); the workers' gRPC servers listen on "
      f"all interfaces, on ports {processes.ports[0]}, {processes.ports[1]}"]
  for output in outputs:
    assert output.startswith("error: --model=resnet: unknown model"), output
