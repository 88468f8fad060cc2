"""`vae-engine preset_rate` from a clone; the tool is engine/cli/preset_rate.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import preset_rate
if __name__ == "__main__":
  preset_rate.cli()
