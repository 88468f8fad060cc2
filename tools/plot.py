"""`vae-engine plot` from a clone; the tool is engine/cli/plot.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import plot
if __name__ == "__main__":
  plot.cli()
