"""Name -> class registries for methods and metrics (the name is the params.yaml key and leaderboard row)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    """A dict of named entries that rejects duplicates and entries of the wrong base class.

    Args:
        kind: what the entries are ("method", "metric"), used in error messages.
        base: every registered class must subclass it (None: any callable).
    """

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or function under `name`."""

        def wrap(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered ({self._entries[name]!r})")
            if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
                raise ValueError(f"{self.kind} {name!r} must be a subclass of {self.base.__name__}, got {obj!r}")
            self._entries[name] = obj
            return obj

        return wrap

    def get(self, name: str) -> T:
        """Return the entry for `name`; unknown names raise UnknownNameError listing the valid ones."""
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
