"""Burda et al. (2015)'s two-stochastic-layer network, for their Table 1
(VAE 85.33 nats, IWAE k=50 82.90 on dynamically binarized MNIST).

Inference, bottom-up: x -> 100-100 tanh -> z_1 (100, Gaussian) -> 50-50 tanh
-> z_2 (50, Gaussian). Generation mirrors it, top-down: z_2 ~ N(0, I) -> 50-50
tanh -> p(z_1 | z_2) Gaussian -> 100-100 tanh -> p(x | z_1) Bernoulli, whose
output bias starts at the logit of the training set's mean pixel values, as in
`models.iwae_mlp`. The latent is z = [z_1, z_2] (`models.hierarchy`), 150
units, the top group last.
"""

from __future__ import annotations

from typing import Optional

import keras
import numpy as np

from models import base
from models import hierarchy
from models.iwae_mlp import output_bias
from models.registry import register

# (hidden widths, latent size) of each stochastic layer, the images' first.
LAYERS = (((100, 100), 100), ((50, 50), 50))


def _tanh_stack(x, units, name):
  for i, width in enumerate(units):
    x = keras.layers.Dense(width, activation="tanh", name=f"{name}_{i}")(x)
  return x


@register("iwae_mlp2", default_latent_dim=150,
          parameter_counts=(121_500, 114_684), initializes_from_data=True,
          description="Burda et al.'s two-stochastic-layer tanh VAE, "
          "784-100-100-z1(100)-50-50-z2(50) (IWAE paper, Table 1).")
def build(image_shape, latent_dim, pixel_mean: Optional[np.ndarray] = None):
  """Builds the network.

  Args:
    image_shape: Shape of one image.
    latent_dim: 150, the paper's z_1 (100) and z_2 (50); another size splits
      in the same 2:1 proportion.
    pixel_mean: Mean of the training targets per pixel, in [0, 1], for the
      output bias (zeros when None).

  Returns:
    A `models.hierarchy.HierarchicalVAE`.
  """
  if latent_dim < 3:
    raise ValueError(f"iwae_mlp2 needs a latent of at least 3 units (two "
                     f"groups), got {latent_dim}")
  top = max(1, latent_dim // 3)
  sizes = (latent_dim - top, top)
  widths = [units for units, _ in LAYERS]

  images, epsilon = base.encoder_inputs(image_shape, latent_dim)
  noise = hierarchy.noise_slices(epsilon, sizes)
  features = keras.layers.Flatten()(images)
  groups = []
  for index, (units, size, group_noise) in enumerate(
      zip(widths, sizes, noise), start=1):
    features = _tanh_stack(features, units, f"encoder{index}")
    groups.append(hierarchy.gaussian_group(features, group_noise, size,
                                           index))
    features = groups[-1][2]  # The next group sees this one's sample.
  encoder = keras.Model(
      [images, epsilon],
      [hierarchy.concatenate([g[i] for g in groups], name)
       for i, name in enumerate(("z_mean", "z_log_var", "z"))],
      name="encoder")

  z = keras.Input(shape=(latent_dim,), name="z")
  z1 = hierarchy.NoiseSlice(0, sizes[0], name="z1_part")(z)
  z2 = hierarchy.NoiseSlice(sizes[0], sizes[1], name="z2_part")(z)
  h = _tanh_stack(z2, widths[1][::-1], "prior1")
  prior1_mean = keras.layers.Dense(sizes[0], name="prior1_mean")(h)
  prior1_log_var = keras.layers.Dense(sizes[0], name="prior1_log_var")(h)
  prior2_mean, prior2_log_var = hierarchy.StandardPrior(
      sizes[1], name="prior2")(z2)
  num_pixels = int(np.prod(image_shape))
  bias = (output_bias(pixel_mean) if pixel_mean is not None
          else np.zeros([num_pixels], np.float32))
  logits = keras.layers.Dense(
      num_pixels, name="logits", dtype="float32",
      bias_initializer=keras.initializers.Constant(bias))(
          _tanh_stack(z1, widths[0][::-1], "decoder"))
  logits = keras.layers.Reshape(image_shape, name="image_logits")(logits)
  decoder = keras.Model(
      z, [logits,
          hierarchy.concatenate([prior1_mean, prior2_mean], "prior_mean"),
          hierarchy.concatenate([prior1_log_var, prior2_log_var],
                                "prior_log_var")],
      name="decoder")
  return hierarchy.HierarchicalVAE("iwae_mlp2", encoder, decoder,
                                   group_sizes=sizes)
