"""One small registry type shared by models, datasets, objectives and (later) attacks.

A single type, instead of parallel dicts kept in sync by hand, so listing, lookup errors and
duplicate detection behave the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from robustlab.errors import RobustlabError

T = TypeVar("T")


class UnknownNameError(RobustlabError, KeyError):
    """Raised when a name is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    description: str


class Registry(Generic[T]):
    """Maps names to values (usually builder functions); duplicate names are an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, description: str = "") -> Callable[[T], T]:
        """Decorator form: ``@MODELS.register("thesis-shallow")``."""

        def decorator(value: T) -> T:
            self.add(name, value, description=description)
            return value

        return decorator

    def add(self, name: str, value: T, *, description: str = "") -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = Entry(name, value, description)

    def get(self, name: str) -> T:
        return self.entry(name).value

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        return [self._entries[name] for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
