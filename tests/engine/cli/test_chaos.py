"""The kill loop (tools/chaos.py): SIGKILL during steps, checkpoint writes and
exports; every checkpoint and export left behind restores; the final weights
equal an uninterrupted run's. `pytest --chaos-kills=12` runs the full count."""

import io
import os

import pytest



from engine.cli import chaos  # noqa: E402

pytestmark = pytest.mark.e2e


@pytest.mark.slow
def test_killed_runs_lose_nothing_and_end_identical(small_mnist_dir, tmp_path,
                                                    request, default_threads):
  kills = request.config.getoption("--chaos-kills")
  log = io.StringIO()
  # 300 steps: seed 1's step kills come a fraction of a second after the
  # first progress line, with 14 checkpoint writes still ahead. A run that
  # ended before a kill fails this test (chaos fails, or the plan's targets
  # and left-behind writes below differ), so a faster CPU cannot pass it
  # without hitting every target.
  summary = chaos.run(
      ["--model=dense", f"--data_dir={small_mnist_dir}", "--batch_size=64",
       "--train_steps=300", "--checkpoint_every=20", "--steps_per_loop=5",
       "--log_every=20", "--nofigures"],
      kills=kills, work_dir=str(tmp_path / "chaos"), seed=1, log=log)
  history = summary["kills"]
  assert len(history) == kills
  assert [k.target for k in history] == chaos.kill_plan(kills)
  # The targeted moments were really hit: partial writes were left behind.
  for kill in history:
    if kill.target == "checkpoint":
      assert kill.left_behind.endswith("_temp"), kill
    if kill.target == "export":
      assert kill.left_behind.startswith(".tmp-"), kill
    # Everything on disk was verified (nothing yet, if the kill came
    # before the first checkpoint).
    assert kill.checked >= 1 or kill.latest == "-", kill
  assert summary["weights"] == summary["reference_weights"]
  assert summary["final_step"] == 300
  # The restarts cleaned up after the kills.
  chaos_dir = tmp_path / "chaos" / "chaos"
  assert not [n for n in os.listdir(chaos_dir) if n.endswith("_temp")]
  assert not [n for n in os.listdir(chaos_dir / "export")
              if n.startswith(".")]


def test_kill_plan_puts_exports_last():
  assert chaos.kill_plan(4) == ["step", "checkpoint", "step", "export"]
  plan = chaos.kill_plan(12)
  assert plan.count("export") == 3 and plan[-3:] == ["export"] * 3
  assert plan[:9].count("checkpoint") == 4


def test_verify_directory_reports_a_corrupt_checkpoint(small_mnist_dir,
                                                       tmp_path):
  from engine.run import runner
  from tests import helpers
  runner.run(helpers.run_config(small_mnist_dir, tmp_path,
                                **{**helpers.SHORT_RUN, "train_steps": 20,
                                   "checkpoint_every": 10}),
             stream=io.StringIO())
  assert chaos.verify_directory(str(tmp_path), str(tmp_path / "none")) == 2
  with open(tmp_path / "ckpt-20.data-00000-of-00001", "r+b") as f:
    f.truncate(100)
  with pytest.raises(AssertionError, match="ckpt-20 does not restore"):
    chaos.verify_directory(str(tmp_path), str(tmp_path / "none"))


@pytest.mark.slow
def test_a_two_worker_job_survives_kills_of_either_worker(small_mnist_dir,
                                                          tmp_path,
                                                          default_threads):
  """`chaos.py --workers=2`: a kill of either worker, while steps run or
  while the chief writes a checkpoint, ends the other by itself within a
  minute; relaunched, the job ends on the uninterrupted job's weights."""
  # 160 steps: seed 0's step kill comes soon after the first progress line,
  # with 7 checkpoint writes still ahead; a job that ended before a kill
  # would be relaunched with other victims, which the asserts below catch.
  summary = chaos.run(
      ["--model=dense", f"--data_dir={small_mnist_dir}", "--batch_size=64",
       "--train_steps=160", "--checkpoint_every=20", "--steps_per_loop=5",
       "--log_every=20", "--nofigures"],
      kills=2, work_dir=str(tmp_path / "chaos"), seed=0, log=io.StringIO(),
      workers=2)
  history = summary["kills"]
  assert [k.target for k in history] == ["step", "checkpoint"]
  # Seed 0 kills the other worker first, then the chief mid-checkpoint.
  assert [k.victim for k in history] == [1, 0]
  for kill in history:
    assert kill.survivors_exit_s is not None and kill.survivors_exit_s < 60
  assert history[1].left_behind.endswith("_temp")
  assert summary["workers"] == 2
  assert summary["weights"] == summary["reference_weights"]
  assert summary["final_step"] == 160


def test_a_multi_worker_plan_has_no_export_kills():
  assert chaos.kill_plan(4, workers=2) == ["step", "checkpoint"] * 2


def test_a_users_work_dir_is_refused_not_deleted(tmp_path):
  from engine.cli import jobs
  from engine.errors import UserError
  (tmp_path / "thesis.tex").write_text("keep me")
  with pytest.raises(UserError, match="not empty and not a work directory "
                     "of chaos"):
    chaos.run(["--model=dense"], 1, str(tmp_path))
  assert (tmp_path / "thesis.tex").read_text() == "keep me"
  # Its own work directory, marked, is cleared and reused.
  own = tmp_path / "own"
  jobs.fresh_work_dir(str(own))
  (own / "reference").mkdir()
  jobs.fresh_work_dir(str(own))
  assert os.listdir(own) == [jobs.WORK_DIR_MARKER]
