"""What must agree for a checkpoint's weights to restore into a model."""

from __future__ import annotations

import dataclasses

from models import registry
from models.base import VariationalAutoencoder


@dataclasses.dataclass(frozen=True)
class Architecture:
  """What must agree for a checkpoint's weights to restore into a model.

  Stored in every checkpoint as one string (`encode`); a plain
  unconditional model's string is the same as before conditional models
  and learned scales existed, so older checkpoints still restore.
  """

  model: str
  latent_dim: int
  image_shape: tuple
  classes: int = 0
  learned_scale: bool = False

  def encode(self) -> str:
    shape = "x".join(str(d) for d in self.image_shape)
    return (f"model={self.model};latent_dim={self.latent_dim};"
            f"image_shape={shape}"
            + (f";classes={self.classes}" if self.classes else "")
            + (";learned_scale=1" if self.learned_scale else ""))

  @classmethod
  def decode(cls, text: str) -> "Architecture":
    fields = dict(item.split("=", 1) for item in text.split(";")
                  if "=" in item)
    return cls(model=fields["model"], latent_dim=int(fields["latent_dim"]),
               image_shape=tuple(int(d) for d in
                                 fields["image_shape"].split("x")),
               classes=int(fields.get("classes", 0)),
               learned_scale=fields.get("learned_scale") == "1")

  def build(self) -> VariationalAutoencoder:
    """A fresh model of this architecture (weights to be restored)."""
    return registry.get(self.model).create(
        self.image_shape, self.latent_dim, learned_scale=self.learned_scale,
        num_classes=self.classes)
