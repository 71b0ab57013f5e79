"""Name -> class registries, so adding a part is one class in one file."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from vaekit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of parts (likelihoods, priors, bodies, datasets)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            self._items[name] = item
            return item
        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(unknown_name_message(self.kind, name, self._items)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return list(self._items)

    def items(self):
        return self._items.items()


def unknown_name_message(kind: str, name: str, valid) -> str:
    """'unknown likelihood 'bernouli'; did you mean 'bernoulli'? (choices: ...)'."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'{hint} (choices: {', '.join(valid)})"
