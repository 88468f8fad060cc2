"""Distribution on a CPU-only machine: logical CPU devices for mirrored, local
processes on 127.0.0.1 for multi-worker jobs, and the faults clusters have."""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import models

from engine.run import finish
from engine.io import summaries
from tests.helpers import REPO_ROOT, write_idx
from tests.helpers import assert_one_line_error, last_wins, run_cli
from tests.helpers import run_in_process

from engine.cli import launch_local  # noqa: E402

pytestmark = pytest.mark.e2e

_MIRRORED_VS_SINGLE = r"""
import io, json, sys
import numpy as np
import tensorflow as tf
import models
from engine.run import build
from engine.run import runner
from engine.config import *

data_dir, root = sys.argv[1], sys.argv[2]
report = {}
# SGD, whose updates differ only by the all-reduce's summation order, for
# the dense and the convolutional model; Adam (slots, per-variable updates)
# for every other model. Adam rows for dense and conv would only repeat their
# SGD rows at a looser tolerance.
for name, optimizer in ([(n, "adam") for n in models.names()
                         if n not in ("dense", "conv")]
                        + [("dense", "sgd"), ("conv", "sgd")]):
  spec = models.get(name)
  # The one-device reference without XLA, sparing its compile; mirrored
  # keeps --jit_compile's default. (One device with and without XLA agree:
  # test_precision's test_xla_and_plain_steps_agree.)
  def config(strategy, model_dir):
    jit_compile = None if strategy == "mirrored" else False
    return RunConfig(
        data=DataConfig(data_dir=data_dir, binarize="dynamic",
                        noise_factor=spec.default_noise_factor),
        model=ModelConfig(name=name, latent_dim=spec.default_latent_dim),
        train=TrainConfig(model_dir=model_dir, batch_size=96, train_steps=10,
                          steps_per_loop=4, log_every=5, checkpoint_every=0,
                          figures=False, optimizer=optimizer,
                          learning_rate=1e-4 if optimizer == "sgd" else 1e-3,
                          jit_compile=jit_compile),
        distribution=DistributionConfig(strategy=strategy, cpu_devices=2))
  key = f"{name}_{optimizer}"
  mirrored = build.build(config("mirrored", f"{root}/{key}_m"))
  mirrored_result = runner.train_evaluate_export(mirrored, io.StringIO())
  single = build.build(config("default", f"{root}/{key}_s"))
  single_result = runner.train_evaluate_export(single, io.StringIO())
  worst, replicas_equal, finite, far, count = 0.0, True, True, 0, 0
  for m, s in zip(mirrored.vae.trainable_variables,
                  single.vae.trainable_variables):
    copies = [v.numpy() for v in m.value.values]  # Keras wraps the tf variable.
    replicas_equal &= len(copies) == 2 and all(np.array_equal(copies[0], c) for c in copies[1:])
    finite &= bool(np.isfinite(copies[0]).all() and np.isfinite(s.numpy()).all())
    difference = np.abs(copies[0] - s.numpy())
    worst = max(worst, float(np.max(difference)))
    far += int(np.sum(difference > 5e-5))
    count += difference.size
  report[key] = {
      "fraction_over_5e-5": far / count, "learning_rate": float(
          single.config.train.learning_rate), "steps": 10,
      "replicas": mirrored.trainer.strategy.num_replicas_in_sync,
      "replicas_equal": bool(replicas_equal), "max_abs_diff": worst,
      "finite": finite,
      "elbo": [mirrored_result.test_metrics["elbo"],
               single_result.test_metrics["elbo"]]}
print(json.dumps(report))
"""


def test_mirrored_on_two_cpus_matches_one_device_for_every_model(
    small_mnist_dir, tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  result = subprocess.run([sys.executable, "-c", _MIRRORED_VS_SINGLE,
                           small_mnist_dir, str(tmp_path)],
                          capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert sorted(report) == sorted([f"{m}_adam" for m in models.names()
                                  if m not in ("dense", "conv")]
                                 + ["dense_sgd", "conv_sgd"])
  for name, row in report.items():
    assert row["replicas"] == 2, name
    assert row["finite"] and row["replicas_equal"], name
    # SGD: the only difference is the all-reduce's float32 summation order.
    if name.endswith("sgd"):
      assert row["max_abs_diff"] < 1e-5, (name, row)
      assert abs(row["elbo"][0] - row["elbo"][1]) < 1e-3, (name, row)
      continue
    # Adam divides each update by sqrt(v): for a parameter whose gradient is
    # near zero that rounding can flip the update's sign, a difference of up
    # to the learning rate a step. How often depends on the CPU's kernels:
    # on a Zen 4 every model stays within 1.5e-5; on a Zen 3 (AVX2 kernels,
    # other blocking for the half batch) mlp and denoising reach 4e-3, with
    # 3.8% and 1.8% of their parameters beyond 5e-5. So: most parameters
    # agree to 5e-5, none by more than the steps' rate, and the test ELBO
    # to 1e-4 of itself (1.1e-5 measured).
    assert row["fraction_over_5e-5"] < 0.1, (name, row)
    assert row["max_abs_diff"] <= row["learning_rate"] * row["steps"], (
        name, row)
    assert abs(row["elbo"][0] - row["elbo"][1]) < 1e-4 * abs(
        row["elbo"][1]), (name, row)


_EVAL_UNDER_STRATEGIES = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration()] * 3)
import keras
import models
from engine.eval import evaluator as elbo_evaluator
from engine.eval import likelihood
from engine.config import ModelConfig
from engine.data import pipeline, sources
from engine.run import parts

data = sources.load_idx_dir(sys.argv[1])
config = parts.objective(ModelConfig(name="conv", latent_dim=2))
keras.utils.set_random_seed(0)
reference = [v.numpy() for v in
             models.get("conv").create((28, 28, 1), 2).trainable_variables]
strategies = {
    "default": tf.distribute.get_strategy(),
    "mirrored2": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    "mirrored3": tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1", "/cpu:2"]),
}
# One model and pair of evaluators per strategy, used for every test set:
# each evaluation starts from zeroed sums, so every count below is its own.
evaluators = {}
for name, strategy in strategies.items():
  with strategy.scope():
    vae = models.get("conv").create((28, 28, 1), 2)
    for variable, value in zip(vae.trainable_variables, reference):
      variable.assign(value)
    functions = elbo_evaluator.model_functions(vae, config)
    evaluators[name] = (
        elbo_evaluator.Evaluator(*functions, strategy, 2),
        likelihood.ImportanceSampledEvaluator(
            *functions, strategy, (28, 28, 1), 2, 4, 96, 0))
report = {}
for count in (130, 208, 512):
  images = pipeline.as_tensor(data.test_images[:count])
  labels = pipeline.as_tensor(data.test_labels[:count])
  options = pipeline.PipelineOptions(96, 0, "dynamic", 0.0, 2)
  for name, strategy in strategies.items():
    evaluator, nll = evaluators[name]
    dataset = strategy.distribute_datasets_from_function(
        lambda context: pipeline.eval_dataset(images, labels, options,
                                              context))
    # What each replica is handed, element by element.
    rows = set()
    for element in dataset:
      for value in element.values():
        for local in strategy.experimental_local_results(value):
          rows.add(int(local.shape[0]) if local.shape.rank else -1)
    metrics = evaluator.evaluate(dataset)
    result = nll.evaluate(dataset)
    report[f"{count}_{name}"] = {
        "rows": sorted(rows), "examples": metrics["examples"],
        "elbo": metrics["elbo"],
        "nll": result.nll, "nll_examples": result.examples,
        "active": [float(v) for v in metrics["unit_variances"]]}
print(json.dumps(report))
"""


def test_evaluation_gives_every_replica_a_full_batch_and_one_devices_numbers(
    small_mnist_dir):
  """Test sets whose last global batch of 96 leaves replicas empty (130: 34
  rows, so 34+0 over 2 replicas and 32+2+0 over 3; 208: 16 rows, so 16+0 and
  16+0+0; 512: 32 rows, so 32+0 and 32+0+0): every replica still gets
  96/replicas rows, static and non-empty, and the ELBO, NLL, active units and
  counts equal one device's."""
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  result = subprocess.run([sys.executable, "-c", _EVAL_UNDER_STRATEGIES,
                           small_mnist_dir], capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  for count in (130, 208, 512):
    single = report[f"{count}_default"]
    assert single["rows"] == [-1, 96], single
    assert single["examples"] == count
    for name, replicas in (("mirrored2", 2), ("mirrored3", 3)):
      row = report[f"{count}_{name}"]
      assert row["rows"] == [-1, 96 // replicas], (name, row)
      assert row["examples"] == count, (name, row)
      assert abs(row["elbo"] - single["elbo"]) < 1e-3, (name, row, single)
      assert row["nll_examples"] == count
      assert abs(row["nll"] - single["nll"]) < 1e-3, (name, row, single)
      np.testing.assert_allclose(row["active"], single["active"],
                                 rtol=1e-4, atol=1e-7)


def test_batch_must_divide_by_replicas(small_mnist_dir, tmp_path):
  assert_one_line_error(
      run_cli("--strategy=mirrored", "--cpu_devices=3", "--batch_size=64",
              f"--data_dir={small_mnist_dir}", f"--model_dir={tmp_path}"),
      "--batch_size=64", "3 replicas")


@pytest.mark.parametrize("strategy,fragment", [
    ("tpu", "--strategy=tpu: no TPU could be reached"),
    ("parameter_server", "--strategy=parameter_server: not supported"),
    ("multi_worker_mirrored", "TF_CONFIG must describe the cluster"),
])
def test_strategies_that_cannot_start_say_why(tmp_path, strategy, fragment):
  without_cluster = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  started = time.monotonic()
  result = run_cli(f"--strategy={strategy}", f"--model_dir={tmp_path}",
                   timeout=120, env=without_cluster)
  assert_one_line_error(result, fragment)
  assert time.monotonic() - started < 100


def _worker_args(data_dir, model_dir, *extra):
  return last_wins(f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                   "--model=dense", "--batch_size=64", "--steps_per_loop=10",
                   "--log_every=50", "--nofigures", *extra)


def _wait_all(processes, timeout):
  outputs = []
  for p in processes:
    out, _ = p.communicate(timeout=timeout)
    outputs.append(out)
  return outputs


def _done_line(output):
  return re.search(r"done: step (\d+), test ELBO (\S+) nats, weights (\w+)",
                   output)


def test_two_worker_job_on_localhost(small_mnist_dir, tmp_path):
  model_dir = tmp_path / "run"
  processes = launch_local.start_workers(
      2, _worker_args(small_mnist_dir, model_dir, "--train_steps=40",
                      "--checkpoint_every=20", f"--export_dir={tmp_path}/e"),
      stdout=subprocess.PIPE)
  outputs = _wait_all(processes, timeout=300)
  assert [p.returncode for p in processes] == [0, 0], outputs
  chief, other = (_done_line(o) for o in outputs)
  assert chief and other, outputs
  assert chief.group(1) == other.group(1) == "40"
  assert chief.group(3) == other.group(3)  # Identical weights.
  assert "2 replica(s)" in outputs[0]
  assert "task worker:0 (chief)" in outputs[0]
  # Only the chief's directory holds the run's files.
  assert sorted(os.path.basename(p) for p in glob.glob(
      str(model_dir / "ckpt-*.index"))) == ["ckpt-20.index", "ckpt-40.index"]
  assert os.listdir(tmp_path / "e") == ["40"]
  assert not (model_dir / ".scratch").exists()
  assert sorted(os.listdir(tmp_path)) == ["e", "run"]


def test_two_worker_conv_job_evaluates_a_short_last_batch_as_one_device(
    mnist, tmp_path):
  """520 test images in global batches of 64 leave 8 for the last one, none
  of them for worker 1's replica: the job still finishes, counts all 520,
  and its test ELBO is the one-device run's (conv: the kernels that failed
  on an empty batch)."""
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  for name, array in (("train-images-idx3-ubyte.gz", mnist.train_images[:640]),
                      ("train-labels-idx1-ubyte.gz", mnist.train_labels[:640]),
                      ("t10k-images-idx3-ubyte.gz", mnist.test_images[:520]),
                      ("t10k-labels-idx1-ubyte.gz", mnist.test_labels[:520])):
    write_idx(str(data_dir / name), array[..., 0] if array.ndim == 4
              else array)
  common = ["--model=conv", "--batch_size=64", "--train_steps=4",
            "--steps_per_loop=2", "--log_every=2", "--checkpoint_every=0",
            "--optimizer=sgd", "--learning_rate=1e-4", "--nofigures",
            f"--data_dir={data_dir}"]
  processes = launch_local.start_workers(
      2, [*common, f"--model_dir={tmp_path}/job"], stdout=subprocess.PIPE)
  outputs = _wait_all(processes, timeout=300)
  assert [p.returncode for p in processes] == [0, 0], outputs
  assert "over 520 test images" in outputs[0]
  single = run_in_process(*common, f"--model_dir={tmp_path}/single")
  assert single.returncode == 0, single.stderr
  job_elbo = summaries.read_metrics(str(tmp_path / "job"))["eval"][4]["elbo"]
  single_elbo = summaries.read_metrics(
      str(tmp_path / "single"))["eval"][4]["elbo"]
  assert abs(job_elbo - single_elbo) < 1e-3, (job_elbo, single_elbo)


def test_killed_worker_ends_the_job_and_a_restart_resumes(small_mnist_dir,
                                                          tmp_path):
  model_dir = tmp_path / "run"
  args = _worker_args(small_mnist_dir, model_dir, "--train_steps=3000",
                      "--checkpoint_every=20", "--collective_timeout=20")
  processes = launch_local.start_workers(2, args, stdout=subprocess.PIPE)
  try:
    deadline = time.monotonic() + 240
    while not glob.glob(str(model_dir / "ckpt-*.index")):
      assert time.monotonic() < deadline, "no checkpoint appeared"
      assert all(p.poll() is None for p in processes)
      time.sleep(0.5)
    time.sleep(1.0)
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    processes[0].wait(timeout=90)
    assert time.monotonic() - killed_at < 60
    assert processes[0].returncode not in (0, None)
    survivor_output = processes[0].stdout.read()
    assert "a worker failed or became unreachable" in survivor_output
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
  saved = sorted(int(re.search(r"ckpt-(\d+)", p).group(1)) for p in
                 glob.glob(str(model_dir / "ckpt-*.index")))
  # A few steps past the last checkpoint: the restart always resumes.
  end = saved[-1] + 20
  restart_args = _worker_args(small_mnist_dir, model_dir,
                              f"--train_steps={end}", "--checkpoint_every=20")
  restarted = launch_local.start_workers(2, restart_args,
                                         stdout=subprocess.PIPE)
  outputs = _wait_all(restarted, timeout=300)
  assert [p.returncode for p in restarted] == [0, 0], outputs
  assert f"resumed from {model_dir}/ckpt-{saved[-1]} at step {saved[-1]}" \
      in outputs[0]
  chief, other = (_done_line(o) for o in outputs)
  assert chief.group(1) == other.group(1) == str(end)
  assert chief.group(3) == other.group(3)


def test_a_peer_that_never_starts_is_reported(tmp_path, small_mnist_dir):
  config = launch_local.tf_configs(2)[0]
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CONFIG=config)
  started = time.monotonic()
  result = subprocess.run(
      [sys.executable, "-m", "engine.main", "--strategy=multi_worker_mirrored",
       "--peer_wait_timeout=10", f"--data_dir={small_mnist_dir}",
       f"--model_dir={tmp_path}"],
      capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)
  assert time.monotonic() - started < 60
  assert result.returncode != 0
  assert "--peer_wait_timeout=10: the cluster in TF_CONFIG" in result.stderr


def test_sigterm_saves_a_checkpoint_and_the_rerun_continues(small_mnist_dir,
                                                            tmp_path):
  args = [sys.executable, "-m", "engine.main",
          *_worker_args(small_mnist_dir, tmp_path, "--train_steps=100000",
                        "--checkpoint_every=0", "--log_every=10")]
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  process = subprocess.Popen(args, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env,
                             cwd=REPO_ROOT)
  for line in process.stdout:
    if line.startswith("step 20/"):
      break
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 143, stderr
  match = re.search(r"preempted \(SIGTERM\) at step (\d+): saved \S+ckpt-(\d+)",
                    stderr)
  assert match and match.group(1) == match.group(2), stderr
  step = int(match.group(1))
  assert os.path.exists(tmp_path / f"ckpt-{step}.index")
  # The signal needed a process; the rerun's resume is the run's own.
  rerun = run_in_process(*_worker_args(small_mnist_dir, tmp_path,
                                       f"--train_steps={step + 30}",
                                       "--checkpoint_every=0"))
  assert rerun.returncode == 0, rerun.stderr
  assert f"resumed from {tmp_path}/ckpt-{step} at step {step}" in rerun.stdout
  assert finish.read_result(str(tmp_path)).final_step == step + 30
