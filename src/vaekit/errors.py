"""User-facing errors.

Anything a user can get wrong (data, flags, run directories) raises a subclass of
:class:`VaekitError`; the CLI turns it into one line ``error: ...`` and exit status 2.
Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VaekitError(Exception):
    """A problem with the user's input, stated with what to do about it."""


class DataError(VaekitError):
    """Data that cannot be read or used (unreadable file, NaN, ragged rows, ...)."""


class ConfigError(VaekitError):
    """A bad option value or configuration key."""


class RunDirError(VaekitError):
    """A run directory that is missing, incomplete or would be overwritten."""
