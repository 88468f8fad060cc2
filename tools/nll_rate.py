"""`vae-engine nll_rate` from a clone; the tool is engine/cli/nll_rate.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import nll_rate
if __name__ == "__main__":
  nll_rate.cli()
