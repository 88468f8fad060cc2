"""--ema_decay: the moving average of the weights, how it is updated and
checkpointed, and that evaluation and the export use it
(engine.train.weight_average)."""

import functools
import io

import numpy as np
import pytest
import tensorflow as tf

from engine.io import summaries
from engine.run import build
from engine.run import runner
from engine.train import weight_average
from tests import helpers


def test_the_average_moves_only_on_applied_steps():
  weights = [tf.Variable([1.0, 2.0]), tf.Variable(3.0)]
  average = weight_average.WeightAverage(weights, 0.9)
  weights[0].assign([11.0, 2.0])
  weights[1].assign(13.0)
  average.update(tf.constant(True), 5)
  np.testing.assert_allclose(average.averages[0].numpy(), [2.0, 2.0],
                             rtol=1e-6)
  np.testing.assert_allclose(average.averages[1].numpy(), 4.0, rtol=1e-6)
  average.update(tf.constant(False), 6)  # A skipped step.
  np.testing.assert_allclose(average.averages[1].numpy(), 4.0, rtol=1e-6)
  dynamic = weight_average.WeightAverage(weights, 0.999, dynamic=True)
  assert float(dynamic.decay_at(0)) == pytest.approx(0.1)
  assert float(dynamic.decay_at(10 ** 6)) == pytest.approx(0.999)


def test_swapped_exchanges_weights_and_averages_and_back_on_any_exit():
  weights = [tf.Variable([1.0, 2.0])]
  average = weight_average.WeightAverage(weights, 0.5)
  weights[0].assign([3.0, 4.0])
  with pytest.raises(KeyError):
    with average.swapped():
      np.testing.assert_array_equal(weights[0].numpy(), [1.0, 2.0])
      raise KeyError
  np.testing.assert_array_equal(weights[0].numpy(), [3.0, 4.0])
  np.testing.assert_array_equal(average.averages[0].numpy(), [1.0, 2.0])


_config = functools.partial(
    helpers.run_config, data={"max_train_examples": 512}, batch_size=32,
    train_steps=20, steps_per_loop=5, log_every=5, checkpoint_every=5,
    eval_every=10, ema_decay=0.9)



@pytest.mark.e2e
def test_evaluation_and_export_use_the_average_and_checkpoints_the_weights(
    small_mnist_dir, tmp_path):
  run = build.build(_config(small_mnist_dir, tmp_path / "run",
                            export_dir=str(tmp_path / "export")))
  result = runner.train_evaluate_export(run, io.StringIO())
  evals = summaries.read_metrics(str(tmp_path / "run"))["eval"]
  for step in (10, 20):  # Both ELBOs, and they differ.
    assert evals[step]["elbo"] != evals[step]["elbo_raw"]
  assert result.test_metrics["elbo_raw"] == evals[20]["elbo_raw"]
  # The model holds its raw weights again; the last checkpoint holds both.
  checkpoint = tf.train.load_checkpoint(result.checkpoint)
  for i, variable in enumerate(run.vae.trainable_variables):
    np.testing.assert_array_equal(checkpoint.get_tensor(
        f"optimizer/_trainable_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"),
                                  variable.numpy())
    np.testing.assert_array_equal(checkpoint.get_tensor(
        f"averages/values/{i}/.ATTRIBUTES/VARIABLE_VALUE"),
                                  run.trainer.average.averages[i].numpy())
  # The export decodes with the averaged weights.
  z = tf.random.stateless_normal([4, run.vae.latent_dim], [1, 2])
  exported = tf.saved_model.load(result.export_path).signatures["decode"](
      z=z)["images"].numpy()
  with run.trainer.average.swapped():
    averaged = run.vae.decoder_probabilities(z).numpy()
  np.testing.assert_allclose(exported, averaged, rtol=1e-5, atol=1e-6)
  assert not np.allclose(exported, run.vae.decoder_probabilities(z).numpy(),
                         atol=1e-4)


@pytest.mark.e2e
def test_a_killed_run_with_an_average_resumes_bit_exactly(small_mnist_dir,
                                                          tmp_path):
  flags = dict(ema_dynamic_decay=False, ema_decay=0.99)  # A fixed decay.
  straight = runner.run(_config(small_mnist_dir, tmp_path / "a", **flags),
                        stream=io.StringIO())
  with pytest.raises(helpers.Killed):
    runner.run(_config(small_mnist_dir, tmp_path / "b", **flags),
               stream=io.StringIO(), extra_actions=(helpers.kill_at(15),))
  resumed = runner.run(_config(small_mnist_dir, tmp_path / "b", **flags),
                       stream=io.StringIO())
  assert resumed.resumed_from and (
      resumed.weights_fingerprint == straight.weights_fingerprint)
  assert resumed.test_metrics == straight.test_metrics


@pytest.mark.e2e
def test_an_average_can_start_on_a_run_that_had_none(small_mnist_dir,
                                                     tmp_path):
  runner.run(_config(small_mnist_dir, tmp_path, ema_decay=0.0,
                     train_steps=10), stream=io.StringIO())
  resumed = runner.run(_config(small_mnist_dir, tmp_path), stream=io.StringIO())
  assert resumed.resumed_from.endswith("ckpt-10")
  assert np.isfinite(resumed.test_metrics["elbo_raw"])
