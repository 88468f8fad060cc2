"""`vae-engine throughput` from a clone; the tool is engine/cli/throughput.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import throughput
if __name__ == "__main__":
  throughput.cli()
