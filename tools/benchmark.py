"""`vae-engine benchmark` from a clone; the tool is engine/cli/benchmark.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import benchmark
if __name__ == "__main__":
  benchmark.cli()
