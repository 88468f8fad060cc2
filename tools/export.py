"""`vae-engine export` from a clone; the tool is engine/cli/export.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import export
if __name__ == "__main__":
  export.cli()
