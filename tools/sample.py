"""`vae-engine sample` from a clone; the tool is engine/cli/sample.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import sample
if __name__ == "__main__":
  sample.cli()
