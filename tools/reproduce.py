"""`vae-engine reproduce` from a clone; the tool is engine/cli/reproduce.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import reproduce
if __name__ == "__main__":
  reproduce.cli()
