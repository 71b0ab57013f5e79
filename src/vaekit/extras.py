"""Optional extras (``pip install 'vaekit[NAME]'``): the one way vaekit imports them, so that a
missing one is always the same clear line naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from vaekit.errors import ConfigError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` (a third-party package of extra ``extra``), or raise ConfigError saying
    that ``purpose`` needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{purpose} needs the {extra} extra ({module.split('.')[0]} is not "
                          f"installed): pip install 'vaekit[{extra}]'") from None
