"""The method registry: `create(name, teacher=..., **options)`, `available()`."""

from __future__ import annotations

import difflib
import inspect
import warnings
from collections.abc import Callable
from typing import Any

from torch import nn

from robustdistill.errors import ConfigError
from robustdistill.methods.base import Method
from robustdistill.registry import Registry

METHODS: Registry[Method] = Registry("method")


def register_method(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: make a Method subclass available under `name` (and its aliases)."""

    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS.register(name, aliases=aliases)(cls)
        return cls

    return decorator


def available() -> list[str]:
    """Names of every registered method."""
    return METHODS.names()


def method_class(name: str) -> type[Method]:
    return METHODS.get(name)  # type: ignore[return-value]


def option_names(name: str) -> list[str]:
    """Keyword options a method accepts (besides its teachers)."""
    params = inspect.signature(method_class(name).__init__).parameters
    return [p for p in params if p not in ("self", "teacher", "natural_teacher")]


def create(
    name: str,
    *,
    teacher: nn.Module | None = None,
    natural_teacher: nn.Module | None = None,
    **options: Any,
) -> Method:
    """Build a registered method; unknown options fail with a did-you-mean message."""
    cls = method_class(name)
    known = option_names(name)
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"method '{cls.name}' has no option '{key}'.{hint} Options: {', '.join(known) or 'none'}")
    kwargs: dict[str, Any] = dict(options)
    accepted = inspect.signature(cls.__init__).parameters
    for key, model in (("teacher", teacher), ("natural_teacher", natural_teacher)):
        if key in accepted:
            kwargs[key] = model
        elif model is not None:
            warnings.warn(f"method '{cls.name}' does not use a {key.replace('_', ' ')}; it is ignored", stacklevel=2)
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"method '{cls.name}': {error}") from None
