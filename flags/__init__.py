"""Command-line flags of the engine and its tools (absl), parsed at the edge."""

from flags.definitions import define, parse, to_config  # noqa: F401
