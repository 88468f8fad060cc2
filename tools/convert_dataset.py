"""`vae-engine convert_dataset` from a clone; the tool is engine/cli/convert_dataset.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import convert_dataset
if __name__ == "__main__":
  convert_dataset.cli()
