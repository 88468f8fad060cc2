"""`vae-engine profile_summary` from a clone; the tool is engine/cli/profile_summary.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import profile_summary
if __name__ == "__main__":
  profile_summary.cli()
