"""Command-line flags of the engine and its tools (absl), parsed at the edge."""

from flags.definitions import (define, define_overrides, parse,  # noqa: F401
                               to_config)
