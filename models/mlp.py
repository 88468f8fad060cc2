"""Seed 003: a deeper MLP VAE, 512-256-128 encoder mirrored by the decoder."""

from models import base
from models.registry import register


@register("mlp", default_latent_dim=2, parameter_counts=(566_660, 567_184),
          description="Dense 512-256-128 encoder, mirrored decoder (seed 003).")
def build(image_shape, latent_dim):
  return base.mlp_vae("mlp", image_shape, latent_dim,
                      encoder_units=(512, 256, 128),
                      decoder_units=(128, 256, 512))
