"""`vae-engine evaluate` from a clone; the tool is engine/cli/evaluate.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import evaluate
if __name__ == "__main__":
  evaluate.cli()
