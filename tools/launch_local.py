"""`vae-engine launch_local` from a clone; the tool is engine/cli/launch_local.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import launch_local
if __name__ == "__main__":
  launch_local.cli()
