"""A small name -> factory registry shared by models, methods and datasets (in the style of timm)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from robustdistill.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names (and aliases) to factories; unknown names fail with a did-you-mean message."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            for key in (name, *aliases):
                if key in self._factories or key in self._aliases:
                    raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._factories[name] = factory
            for alias in aliases:
                self._aliases[alias] = name
            return factory

        return decorator

    def resolve(self, name: str) -> str:
        """The canonical name for `name` or an alias; raises ConfigError with suggestions."""
        key = name.strip().lower()
        if key in self._factories:
            return key
        if key in self._aliases:
            return self._aliases[key]
        hint = self._pattern_match(key)
        if hint is not None:
            return hint
        choices = sorted([*self._factories, *self._aliases])
        close = difflib.get_close_matches(key, choices, n=1)
        suggestion = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown {self.kind} '{name}'.{suggestion} Available: {', '.join(sorted(self._factories))}")

    def _pattern_match(self, key: str) -> str | None:
        """Hook for families of names (e.g. wrn-D-K); the default knows none."""
        return None

    def get(self, name: str) -> Callable[..., T]:
        return self._factories[self.resolve(name)]

    def names(self) -> list[str]:
        return sorted(self._factories)

    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __contains__(self, name: str) -> bool:
        try:
            self.resolve(name)
        except ConfigError:
            return False
        return True
