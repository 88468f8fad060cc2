"""`vae-engine device_check` from a clone; the tool is engine/cli/device_check.py."""
import _clone  # noqa: F401  (this clone's engine first)
from engine.cli import device_check
if __name__ == "__main__":
  device_check.cli()
