"""A user's model from the user's own package, the engine untouched: a tiny
package installed with pip into a fresh virtualenv beside the engine (its
`vae_engine.models` entry point), and the same builder named as
`package.module:function` on PYTHONPATH. Each is trained, killed with
SIGKILL and resumed bit-exactly, evaluated (ELBO and NLL), exported (run in
a fresh TF2 process and in the session loader) and sampled, through the
command line alone."""

import json
import os
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time

import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.engine.serving.runtimes import Session

_BUILDER = '''\
"""A user's models: not part of vae-engine."""

import keras
import numpy as np

from models import base


def build(image_shape, latent_dim=3):
  """A tiny residual tanh MLP (the plug-in test's own model).

  More text that is not the description.
  """
  images = keras.Input(shape=image_shape, name="images")
  epsilon = keras.Input(shape=(latent_dim,), name="epsilon")
  h = keras.layers.Dense(24, activation="tanh")(
      keras.layers.Flatten()(images))
  h = keras.layers.Add()([h, keras.layers.Dense(24, activation="tanh")(h)])
  z_mean = keras.layers.Dense(latent_dim, name="z_mean")(h)
  z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(h)
  z = base.Reparameterize(name="z")([z_mean, z_log_var, epsilon])
  encoder = keras.Model([images, epsilon], [z_mean, z_log_var, z])
  z_input = keras.Input(shape=(latent_dim,), name="z")
  g = keras.layers.Dense(24, activation="tanh")(z_input)
  logits = keras.layers.Dense(int(np.prod(image_shape)), dtype="float32")(g)
  decoder = keras.Model(z_input,
                        keras.layers.Reshape(image_shape)(logits))
  return base.VariationalAutoencoder("whatever", encoder, decoder)


def with_dropout(image_shape, latent_dim=3):
  """Breaks the contract: dropout draws its own noise."""
  vae = build(image_shape, latent_dim)
  images = keras.Input(shape=image_shape)
  epsilon = keras.Input(shape=(latent_dim,))
  dropped = keras.layers.Dropout(0.5)(images)
  encoder = keras.Model([images, epsilon], vae.encoder([dropped, epsilon]))
  return base.VariationalAutoencoder("x", encoder, vae.decoder)
'''

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tinyvae"
version = "0.1"

[project.entry-points."vae_engine.models"]
tiny = "tinyvae.models:build"
broken = "tinyvae.missing:build"
'''


def _write_package(root):
  (root / "tinyvae").mkdir(parents=True)
  (root / "tinyvae" / "__init__.py").write_text("")
  (root / "tinyvae" / "models.py").write_text(_BUILDER)
  (root / "pyproject.toml").write_text(_PYPROJECT)
  return root


@pytest.fixture(scope="module")
def virtualenv(tmp_path_factory):
  """A fresh virtualenv that sees the engine's environment (TensorFlow and
  the engine, as installed beside it) and holds `tinyvae`, installed by
  pip: (its python, an environment without PYTHONPATH)."""
  root = tmp_path_factory.mktemp("plugin")
  package = _write_package(root / "src")
  venv = root / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)],
                 check=True, timeout=300)
  python = venv / "bin" / "python"
  site = subprocess.run([str(python), "-c", "import sysconfig; print("
                         "sysconfig.get_paths()['purelib'])"],
                        capture_output=True, text=True,
                        check=True).stdout.strip()
  engine_site = sysconfig.get_paths()["purelib"]
  with open(os.path.join(site, "vae_engine_beside.pth"), "w") as f:
    # The engine's own site directory (its .pth files included) and the
    # engine itself, wherever it was installed from.
    f.write(f"import site; site.addsitedir({engine_site!r})\n{REPO_ROOT}\n")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  installed = subprocess.run(
      [sys.executable, "-m", "pip", "--python", str(python), "install",
       "--no-deps", "--no-build-isolation", "--no-index", str(package)],
      capture_output=True, text=True, env=env, timeout=600)
  assert installed.returncode == 0, installed.stderr[-3000:]
  return str(python), env


@pytest.fixture(scope="module")
def on_path(tmp_path_factory):
  """The same package, not installed: on PYTHONPATH only."""
  root = _write_package(tmp_path_factory.mktemp("plugin_path"))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), REPO_ROOT]))
  return sys.executable, env


def _engine(python, env, cwd, *args, timeout=900):
  return subprocess.run([python, "-m", "engine.main", *args],
                        capture_output=True, text=True, cwd=str(cwd), env=env,
                        timeout=timeout)


def _train_args(model, data_dir, model_dir, steps):
  return [f"--model={model}", f"--data_dir={data_dir}",
          f"--model_dir={model_dir}", f"--train_steps={steps}",
          "--steps_per_loop=5", "--checkpoint_every=5", "--log_every=5",
          "--eval_every=0", "--nofigures", "--batch_size=32", "--seed=7"]


def _fingerprint(model_dir):
  with open(os.path.join(model_dir, "result.json")) as f:
    return json.load(f)["weights_fingerprint"]


def _kill_after_a_checkpoint(python, env, cwd, args, model_dir):
  """Starts training, SIGKILLs it once its second checkpoint is on disk."""
  process = subprocess.Popen([python, "-m", "engine.main", *args],
                             cwd=str(cwd), env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while time.time() < deadline and process.poll() is None:
    if os.path.exists(os.path.join(model_dir, "ckpt-10.index")):
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.05)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == -signal.SIGKILL, stderr[-3000:]


def _serves_without_the_package(python_env, export, cwd):
  """decode(z=0) and sample(num=4) from a fresh TF2 process that has no
  import path to the package or the engine."""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  script = textwrap.dedent(f"""
      import json, sys
      sys.path = [p for p in sys.path if p not in ("", {REPO_ROOT!r})]
      import tensorflow as tf
      loaded = tf.saved_model.load({export!r})
      z = tf.zeros([2, 3])
      decoded = loaded.signatures["decode"](z=z)
      sampled = loaded.signatures["sample"](num=tf.constant(4))
      try:
        import tinyvae
        sys.exit("tinyvae importable")
      except ImportError:
        pass
      print(json.dumps({{k: v.numpy().tolist() for k, v in decoded.items()}}
                       | {{"sample_shape": sampled["images"].shape.as_list()}}))
  """)
  done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                        text=True, cwd=str(cwd), env=env, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("way", ["entry_point", "reference"])
def test_a_users_model_trains_resumes_evaluates_exports_and_samples(
    way, request, small_mnist_dir, tmp_path):
  python, env = request.getfixturevalue(
      "virtualenv" if way == "entry_point" else "on_path")
  model = "tiny" if way == "entry_point" else "tinyvae.models:build"
  listed = _engine(python, env, tmp_path, "--list_models")
  assert listed.returncode == 0, listed.stderr[-3000:]
  if way == "entry_point":
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()
             if line.strip()}
    assert "installed" in lines["tiny"]
    assert lines["tiny"].endswith(
        "A tiny residual tanh MLP (the plug-in test's own model).")
    assert "(cannot be loaded: cannot load tinyvae.missing:build" in (
        lines["broken"])
    helped = _engine(python, env, tmp_path, "--helpfull")
    assert "tiny: A tiny residual tanh MLP" in " ".join(helped.stdout.split())

  whole, killed = tmp_path / "whole", tmp_path / "killed"
  done = _engine(python, env, tmp_path,
                 *_train_args(model, small_mnist_dir, whole, 20))
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"training {model} (latent 3)" in done.stdout, done.stdout
  args = _train_args(model, small_mnist_dir, killed, 20) + [
      f"--export_dir={killed}/export"]
  _kill_after_a_checkpoint(python, env, tmp_path, args, str(killed))
  resumed = _engine(python, env, tmp_path, *args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from" in resumed.stdout, resumed.stdout
  assert _fingerprint(killed) == _fingerprint(whole)

  evaluated = _engine(python, env, tmp_path, "evaluate",
                      f"--model_dir={killed}", "--eval_nll_samples=5",
                      "--max_test_examples=64", "--batch_size=32",
                      f"--output_json={tmp_path}/eval.json")
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  record = json.loads((tmp_path / "eval.json").read_text())
  assert record["examples"] == 64
  assert 0 < record["nll"] <= -record["elbo"] + 1e-3, record

  export = str(killed / "export" / "20")
  assert os.path.isfile(os.path.join(export, "saved_model.pb"))
  if way == "reference":
    # What follows reads only the export, which holds no trace of how its
    # builder was found: the entry point's run serves it for both ways.
    return
  served = _serves_without_the_package(env, export, tmp_path)
  assert served["sample_shape"] == [4, 28, 28, 1]
  session = Session(export).run("decode", {"z": np.zeros([2, 3], np.float32)})
  for name, value in session.items():
    np.testing.assert_allclose(value, np.asarray(served[name]), rtol=1e-5,
                               atol=1e-6)
  sampled = _engine(python, env, tmp_path, "sample", f"--saved_model={export}",
                    "--num=8", f"--output={tmp_path}/samples/s")
  assert sampled.returncode == 0, sampled.stderr[-3000:]
  assert np.load(tmp_path / "samples" / "s.npy").shape[0] == 8


@pytest.mark.slow
@pytest.mark.parametrize("model,fragment", [
    ("broken", "--model=broken: cannot load tinyvae.missing:build (from "
     "tinyvae 0.1): ModuleNotFoundError"),
    ("tinyvae.models:with_dropout", "--model=tinyvae.models:with_dropout: it "
     "draws its own random numbers"),
    ("tinyvae.nothere:build", "--model=tinyvae.nothere:build: no module named "
     "'tinyvae.nothere'"),
])
def test_a_broken_builder_is_one_line_before_training(
    model, fragment, virtualenv, small_mnist_dir, tmp_path):
  python, env = virtualenv
  failed = _engine(python, env, tmp_path,
                   *_train_args(model, small_mnist_dir, tmp_path / "m", 5))
  assert failed.returncode == 2, failed.stderr[-3000:]
  errors = [line for line in failed.stderr.splitlines()
            if line.startswith("error:")]
  assert errors and fragment in errors[0], failed.stderr[-3000:]
  assert "Traceback" not in failed.stderr
  assert not os.path.exists(tmp_path / "m" / "checkpoint")
