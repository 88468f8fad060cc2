"""Seed 000: a dense VAE, 784-256-128 encoder and 128-256-784 decoder."""

from models import base
from models.registry import register


@register("dense", default_latent_dim=2, parameter_counts=(234_372, 234_896),
          description="Dense 256-128 encoder, 128-256 decoder (seed 000).")
def build(image_shape, latent_dim):
  return base.mlp_vae("dense", image_shape, latent_dim,
                      encoder_units=(256, 128), decoder_units=(128, 256))
