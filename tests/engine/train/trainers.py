"""A trainer as the tests build it: from model settings, an optimizer name
and a learning rate, the way the build step (`engine.run.parts`) does."""

from engine.config import ModelConfig
from engine.run import parts
from engine.train import optimization
from engine.train import trainer as trainer_lib
from engine.train.step_options import StepOptions


def make_trainer(vae, model_config: ModelConfig, strategy, global_batch_size,
                 learning_rate, optimizer="adam", loss_scaling=False,
                 adam_epsilon=1e-7, **kwargs) -> trainer_lib.Trainer:
  """`Trainer` of `vae` for `model_config` (its objective and KL warm-up),
  `kwargs` its other `StepOptions`; create it inside the strategy's scope."""
  return trainer_lib.Trainer(
      vae, parts.objective(model_config),
      optimization.make_optimizer(optimizer, learning_rate, adam_epsilon,
                                  loss_scaling),
      strategy, global_batch_size,
      StepOptions(kl_warmup_steps=model_config.kl_warmup_steps, **kwargs))


def poison(trainer: trainer_lib.Trainer, at_step: int,
           once: bool = True) -> None:
  """Makes the gradients of step `at_step` NaN (the first time it runs, or
  every time): a poisoned batch, for the non-finite guard and recovery.
  Call before the trainer's first step (its loop is traced then)."""
  import tensorflow as tf

  compute = trainer.gradients
  used = tf.Variable(False, trainable=False)

  def poisoned(batch):
    gradients, terms = compute(batch)
    hit = tf.equal(trainer.global_step, at_step)
    if once:
      hit = tf.logical_and(hit, tf.logical_not(used))
      used.assign(tf.logical_or(used, hit))
    return [tf.where(hit, g * float("nan"), g) for g in gradients], terms

  trainer.gradients = poisoned
