"""A run directory belongs to one run: resuming on other data or with
settings that change what is trained is refused, config.json is never
rewritten for a run that did not happen, moved data still resumes, and
--init_from starts a new run from another's weights."""

import functools
import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest

from engine.config import ModelConfig
from engine.errors import CheckpointMismatchError, UserError
from engine.io import checkpoint_repair
from engine.io import files
from engine.io import run_dir
from engine.run import build
from engine.run import resume_check
from engine.run import runner
from tests.helpers import write_idx
from tests import helpers

# One worker trains the module's base run once (`_base_run`).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("resume_check")]


_config = functools.partial(
    helpers.run_config, batch_size=64, train_steps=20, steps_per_loop=10,
    log_every=10, checkpoint_every=10, eval_every=0)


@pytest.fixture(scope="module")
def _base_run(tmp_path_factory, small_mnist_dir):
  """The 20-step run on small MNIST that most tests start from, trained once
  for the module."""
  directory = tmp_path_factory.mktemp("base_run") / "run"
  runner.run(_config(small_mnist_dir, directory), stream=io.StringIO())
  return directory


@pytest.fixture
def base_run(_base_run):
  """Puts a copy of the base run at a path (the test's own: tests resume,
  refuse or add files in it) as if `runner.run(_config(small_mnist_dir,
  path))` had trained it there. A copy is that run: checkpoints are found
  by their files, the state file names them relative to the directory, and
  a moved --model_dir is not a change of the run's settings."""
  def copy(path):
    shutil.copytree(_base_run, path, dirs_exist_ok=True)
    return path
  return copy


@pytest.fixture(scope="module")
def other_mnist_dir(tmp_path_factory, mnist):
  """Another dataset of MNIST's shape: the next 2,048 training images."""
  directory = str(tmp_path_factory.mktemp("other_mnist"))
  write_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"),
            mnist.train_images[2048:4096, ..., 0])
  write_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"),
            mnist.train_labels[2048:4096])
  write_idx(os.path.join(directory, "t10k-images-idx3-ubyte.gz"),
            mnist.test_images[512:1024, ..., 0])
  write_idx(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"),
            mnist.test_labels[512:1024])
  return directory


def test_new_data_in_an_old_run_dir_is_refused(other_mnist_dir, tmp_path,
                                               base_run):
  base_run(tmp_path)
  before = {name: (tmp_path / name).read_bytes()
            for name in ("config.json", "flags.txt", "result.json")}
  with pytest.raises(UserError, match=(
      r"holds a run trained on other data than .*other_mnist.* "
      r"\(train_pixel_mean_sha256 \w+ there, \w+ here\); pass the data it "
      r"was trained on, another --model_dir, or --init_from=")):
    runner.run(_config(other_mnist_dir, tmp_path, train_steps=40),
               stream=io.StringIO())
  after = {name: (tmp_path / name).read_bytes() for name in before}
  assert after == before  # Nothing claims a training that never happened.
  assert checkpoint_repair.checkpoints_on_disk(str(tmp_path))[0].endswith(
      "ckpt-20")


def test_moved_data_still_resumes(small_mnist_dir, tmp_path, base_run):
  moved = tmp_path / "moved"
  shutil.copytree(small_mnist_dir, moved)
  run_dir = base_run(tmp_path / "run")
  # Whether the run resumes is decided before any step is compiled.
  result = runner.run(_config(moved, run_dir, train_steps=30,
                              jit_compile=False), stream=io.StringIO())
  assert result.final_step == 30
  assert json.loads((run_dir / "config.json").read_text())["data"][
      "data_dir"] == str(moved)


@pytest.mark.parametrize("change,message", [
    (dict(train=dict(seed=1)), "--seed=0 there, 1 here"),
    (dict(train=dict(batch_size=32)), "--batch_size=64 there, 32 here"),
    (dict(model=dict(beta=0.5)), "--beta=1.0 there, 0.5 here"),
    (dict(data=dict(binarize="static")),
     "--binarize=none there, static here"),
])
def test_settings_that_change_the_run_are_refused(small_mnist_dir, tmp_path,
                                                  change, message,
                                                  base_run):
  config = _config(small_mnist_dir, base_run(tmp_path))
  config_json = (tmp_path / "config.json").read_bytes()
  changed = dataclasses.replace(config, **{
      section: dataclasses.replace(getattr(config, section), **values)
      for section, values in change.items()})
  with pytest.raises(CheckpointMismatchError, match=(
      r"holds a run trained with other settings \(" + message +
      r"\); resume it with its own settings \(its flags.txt\)")):
    build.build(changed)
  assert (tmp_path / "config.json").read_bytes() == config_json


def test_resume_safe_changes_are_announced_and_kept(small_mnist_dir,
                                                    tmp_path, base_run):
  base_run(tmp_path)
  stream = io.StringIO()
  runner.run(_config(small_mnist_dir, tmp_path, train_steps=30,
                     learning_rate=2e-4, eval_every=10),
             stream=stream)
  line = next(line for line in stream.getvalue().splitlines()
              if line.startswith("resumed with changed settings: "))
  for change in ("--train_steps=20 until now, 30 from here",
                 "--learning_rate=0.001 until now, 0.0002 from here",
                 "--eval_every=0 until now, 10 from here"):
    assert change in line, line
  history = [json.loads(line) for line in
             (tmp_path / resume_check.HISTORY_JSONL).read_text().splitlines()]
  assert history == [{"step": 20, "changed": {
      "learning_rate": [0.001, 0.0002], "eval_every": [0, 10],
      "train_steps": [20, 30]}}]


def test_init_from_starts_a_new_run_from_another_runs_weights(
    other_mnist_dir, tmp_path, base_run):
  source = base_run(tmp_path / "source")
  for path in (str(source), str(source / "ckpt-20")):
    target = tmp_path / f"target{len(path)}"
    built = build.build(_config(other_mnist_dir, target, init_from=path))
    assert built.resumed_from is None
    assert built.initialized_from == str(source / "ckpt-20")
    assert built.trainer.step == 0
    ours = [w.numpy() for w in
            built.vae.encoder.weights + built.vae.decoder.weights]
    trained = run_dir.load_trained_model(str(source)).vae
    theirs = [w.numpy() for w in
              trained.encoder.weights + trained.decoder.weights]
    assert len(ours) == len(theirs) > 0
    for mine, source_weight in zip(ours, theirs):
      np.testing.assert_array_equal(mine, source_weight)
    built.workspace.close()
  stream = io.StringIO()
  # What is tested is where the weights come from, not how steps compile.
  result = runner.run(_config(other_mnist_dir, tmp_path / "fine_tuned",
                              init_from=str(source), jit_compile=False),
                      stream=stream)
  assert result.final_step == 20
  assert f"initialized from {source}/ckpt-20" in stream.getvalue()
  # Resumed, the run continues from its own checkpoint, not the source's.
  resumed = build.build(_config(other_mnist_dir, tmp_path / "fine_tuned",
                                init_from=str(source), train_steps=30))
  assert resumed.resumed_from.endswith("fine_tuned/ckpt-20")
  assert resumed.initialized_from is None
  resumed.workspace.close()


def test_init_from_refuses_what_it_cannot_take(small_mnist_dir, tmp_path,
                                               base_run):
  source = base_run(tmp_path / "source")
  other_model = dataclasses.replace(
      _config(small_mnist_dir, tmp_path / "a", init_from=str(source)),
      model=ModelConfig(name="mlp"))
  with pytest.raises(CheckpointMismatchError, match=(
      r"--init_from=.*source: holds a checkpoint of another model .*"
      r"model=dense there, model=mlp here")):
    build.build(other_model)
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="--init_from=.*empty: holds no "
                     "checkpoint"):
    build.build(_config(small_mnist_dir, tmp_path / "b",
                        init_from=str(tmp_path / "empty")))
  (tmp_path / "junk.index").write_bytes(b"junk")
  with pytest.raises(UserError, match="--init_from=.*junk: not a readable "
                     "vae-engine checkpoint"):
    build.build(_config(small_mnist_dir, tmp_path / "c",
                        init_from=str(tmp_path / "junk")))


def test_cleanup_removes_only_what_the_engine_was_writing(tmp_path):
  """A killed save's temporary directory goes only when the journal names
  it and it holds only TensorFlow's shard files; a user's look-alikes, and
  an export written under such a name, stay."""
  shard = "part-00000-of-00001.data-00000-of-00001"
  killed = tmp_path / "ckpt-40_temp"
  killed.mkdir()
  (killed / shard).write_bytes(b"x")
  (killed / "part-00000-of-00001.index").write_bytes(b"x")
  # A kill while TensorFlow writes a shard leaves it under its in-flight name.
  (killed / (shard + ".tempstate9663203536476563917")).write_bytes(b"x")
  notes = tmp_path / "ckpt-my-notes_temp"
  notes.mkdir()
  (notes / "important.txt").write_text("keep me")
  export = tmp_path / "ckpt-5_temp" / "5" / "assets.extra"
  export.mkdir(parents=True)
  (export / "vae_engine_export.json").write_text("{}")
  unjournalled = tmp_path / "ckpt-60_temp"
  unjournalled.mkdir()
  (unjournalled / shard).write_bytes(b"x")
  checkpoint_repair.note_save(str(tmp_path), 40)
  left = checkpoint_repair.remove_half_written(str(tmp_path))
  assert not killed.exists()
  assert (notes / "important.txt").read_text() == "keep me"
  assert (export / "vae_engine_export.json").exists()
  assert (unjournalled / shard).exists()
  assert sorted(os.path.basename(p) for p in left) == [
      "ckpt-5_temp", "ckpt-60_temp", "ckpt-my-notes_temp"]
  assert not (tmp_path / checkpoint_repair.SAVE_JOURNAL).exists()
  # A journalled name that holds a user's file is left too.
  checkpoint_repair.note_save(str(tmp_path), 5)
  assert "ckpt-5_temp" in [os.path.basename(p) for p in
                           checkpoint_repair.remove_half_written(
                               str(tmp_path))]
  assert (export / "vae_engine_export.json").exists()


def test_a_resumed_run_leaves_a_users_look_alikes_alone(small_mnist_dir,
                                                        tmp_path, base_run):
  config = _config(small_mnist_dir, base_run(tmp_path / "run"))
  notes = tmp_path / "run" / "ckpt-my-notes_temp"
  notes.mkdir()
  (notes / "important.txt").write_text("keep me")
  export_dir = tmp_path / "run" / "ckpt-5_temp"
  # Runs that save and export around the look-alikes: what is tested is
  # which files they remove, not how their steps compile.
  runner.run(dataclasses.replace(config, train=dataclasses.replace(
      config.train, train_steps=30, export_dir=str(export_dir),
      jit_compile=False)), stream=io.StringIO())
  runner.run(dataclasses.replace(config, train=dataclasses.replace(
      config.train, train_steps=40, jit_compile=False)), stream=io.StringIO())
  assert (notes / "important.txt").read_text() == "keep me"
  assert files.gfile.exists(str(export_dir / "30" / "saved_model.pb"))


def test_export_recovery_touches_only_marked_entries(tmp_path):
  from engine.serving import export
  users = tmp_path / ".tmp-7-0123abcd"
  users.mkdir()
  (users / "mine.txt").write_text("keep me")
  staged = tmp_path / ".tmp-8-89abcdef"
  staged.mkdir()
  (staged / export.STAGING_MARKER).write_text("")
  (staged / "saved_model.pb").write_bytes(b"half")
  retired_foreign = tmp_path / ".old-9-00000000" / "old"
  retired_foreign.mkdir(parents=True)
  (retired_foreign / "mine.txt").write_text("keep me")
  assert export.recover(str(tmp_path)) == [".old-9-00000000",
                                           ".tmp-7-0123abcd"]
  assert (users / "mine.txt").exists() and not staged.exists()
  assert (retired_foreign / "mine.txt").exists()
