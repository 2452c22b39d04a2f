"""Name -> factory registries, so configs and the CLI pick components by name (DESIGN rule 3)."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories; ``register`` is a decorator, ``get`` explains unknown names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._prefixes: dict[str, Callable[[str], T]] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._entries[key] = obj
            return obj

        return decorator

    def register_prefix(self, prefix: str, resolver: Callable[[str], T]) -> None:
        """Resolve a family of names such as ``tv:resnet18`` through one resolver."""
        self._prefixes[prefix] = resolver

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        for prefix, resolver in self._prefixes.items():
            if name.startswith(prefix):
                return resolver(name[len(prefix):])
        raise ConfigError(
            f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            + (f" (or {', '.join(p + 'NAME' for p in self._prefixes)})" if self._prefixes else "")
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self._entries or any(name.startswith(p) for p in self._prefixes)
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names())})"
