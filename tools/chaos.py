"""`vae-engine chaos` from a clone; the tool is engine/cli/chaos.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import chaos
if __name__ == "__main__":
  chaos.cli()
