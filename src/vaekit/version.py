"""The package version (floor 0: every layer may read it)."""

__version__ = "0.1.0"
