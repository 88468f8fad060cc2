"""Puts this clone on the import path, so `python tools/<tool>.py` runs the
tool of the code beside it (installed: `vae-engine <tool>`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
