"""The baseline every speed claim is measured against: Keras `model.fit`.

The seeds' way of training a VAE (keras.io): a `keras.Model` whose
`train_step` computes the same loss as our loop and tracks the same means,
trained by `fit` on float32 numpy arrays, with XLA as Keras chooses it.
"""

from __future__ import annotations

import time


class FitModel:
  """The seeds' way: a keras.Model with a custom train_step, fed numpy.

  Like the seeds' VAE (keras.io), it tracks the mean total, reconstruction
  and KL losses with `keras.metrics.Mean`: the same terms our loop
  accumulates.
  """

  @staticmethod
  def build(vae, model_config, jit_compile="auto", steps_per_execution=1):
    import keras
    import tensorflow as tf

    from engine.objectives import elbo
    from engine.run import parts

    objective = parts.objective(model_config)

    class FitVAE(keras.Model):

      def __init__(self):
        super().__init__()
        self.vae_encoder = vae.encoder
        self.vae_decoder = vae.decoder
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in ("loss", "reconstruction", "kl")}

      @property
      def metrics(self):
        return list(self.trackers.values())

      def train_step(self, data):
        epsilon = tf.random.normal([tf.shape(data)[0], vae.latent_dim])
        with tf.GradientTape() as tape:
          terms = elbo.per_example_terms(
              vae, objective,
              {"inputs": data, "targets": data, "epsilon": epsilon},
              training=True)
          loss = tf.reduce_mean(terms["loss"])
        variables = self.trainable_variables
        self.optimizer.apply_gradients(
            zip(tape.gradient(loss, variables), variables))
        for name, tracker in self.trackers.items():
          tracker.update_state(tf.reduce_mean(terms[name]))
        return {name: tracker.result()
                for name, tracker in self.trackers.items()}

    model = FitVAE()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    return model


def fit_runner(spec, data, model_config, batch_size: int, max_steps: int,
               jit_compile="auto", steps_per_execution: int = 1):
  """`count -> examples/sec` of `model.fit` on the seeds' float32 model over
  `count` batches of real data (the first execution, which traces, untimed).

  `jit_compile` and `steps_per_execution` are `compile`'s: Keras's defaults
  (on a CPU, "auto" means no XLA), or the strongest `fit` a user could
  write (True, 100).
  """
  import keras

  from engine.devices import precision

  with precision.policy_scope("float32"):
    fit_model = FitModel.build(spec.build(data.image_shape,
                                           model_config.latent_dim),
                                model_config, jit_compile,
                                steps_per_execution)
  arrays = (data.train_images[:(max_steps + steps_per_execution)
                              * batch_size].astype("float32") / 255.0)

  class Clock(keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      if not hasattr(self, "started"):  # After the first execution.
        self.started = time.perf_counter()
        self.untimed = batch + 1

    def on_train_end(self, logs=None):
      self.elapsed = time.perf_counter() - self.started

  def run_fit(count):
    clock = Clock()
    count = max(count, steps_per_execution + 1)
    fit_model.fit(arrays[:count * batch_size], batch_size=batch_size,
                  epochs=1, verbose=0, shuffle=True, callbacks=[clock])
    return (count - clock.untimed) * batch_size / clock.elapsed

  return run_fit
