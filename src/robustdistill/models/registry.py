"""Model registry: `register_model`, `create`, `available`, and the `wrn-D-K` / `dm-wrn-D-K` name families."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from robustdistill.errors import ConfigError
from robustdistill.models.base import Classifier
from robustdistill.registry import Registry

WRN_FAMILY = "wide-resnet"
DM_WRN_FAMILY = "dm-wide-resnet"
#: family -> (name prefix, pattern of its depth-width names)
_FAMILIES = {
    WRN_FAMILY: ("wrn", re.compile(r"^wrn-?(\d+)-(\d+)$")),
    DM_WRN_FAMILY: ("dm-wrn", re.compile(r"^dm-wrn-?(\d+)-(\d+)$")),
}


def wrn_family(key: str) -> tuple[str, int, int] | None:
    """`(family, depth, widen_factor)` for names such as `wrn-16-2` or `dm-wrn-28-10`; None otherwise.

    Raises ConfigError for a well-formed name whose depth or widen factor is impossible.
    """
    for family, (prefix, pattern) in _FAMILIES.items():
        match = pattern.match(key.strip().lower())
        if match is None:
            continue
        depth, widen = int(match.group(1)), int(match.group(2))
        if depth < 10 or (depth - 4) % 6 != 0 or widen < 1:
            raise ConfigError(
                f"'{key}' is not a valid wide ResNet: {prefix}-D-K needs (D - 4) % 6 == 0 with D >= 10 "
                f"(for example 16, 22, 28, 34, 40, 70) and a widen factor K >= 1."
            )
        return family, depth, widen
    return None


def parse_wrn(key: str) -> tuple[int, int] | None:
    """`(depth, widen_factor)` of a `wrn-D-K` or `dm-wrn-D-K` name; None when `key` is not of that form."""
    parsed = wrn_family(key)
    return None if parsed is None else parsed[1:]


class _ModelRegistry(Registry[Classifier]):
    def _pattern_match(self, key: str) -> str | None:
        parsed = wrn_family(key)
        if parsed is not None and parsed[0] in self._factories:
            return parsed[0]
        return None


_REGISTRY = _ModelRegistry("model")


def register_model(
    name: str, aliases: Sequence[str] = ()
) -> Callable[[Callable[..., Classifier]], Callable[..., Classifier]]:
    """Decorator registering `factory(num_classes, in_channels, **kwargs) -> Classifier` under `name`."""
    keys = [name, *aliases]
    for key in keys:
        if key != key.strip().lower():
            raise ValueError(f"model names are lower case without spaces, got '{key}'")
    return _REGISTRY.register(name, aliases=tuple(aliases))


def available() -> list[str]:
    """Canonical names of the registered models (any `wrn-D-K` and `dm-wrn-D-K` is accepted as well)."""
    return _REGISTRY.names()


def resolve(name: str) -> str:
    """The canonical architecture name `create(name)` records in the spec."""
    key = name.strip().lower()
    canonical = _REGISTRY.resolve(key)
    parsed = wrn_family(key) if canonical in _FAMILIES and key != canonical else None
    if parsed is not None:
        return f"{_FAMILIES[canonical][0]}-{parsed[1]}-{parsed[2]}"
    return canonical


def _check_kwargs(name: str, factory: Callable[..., Classifier], kwargs: dict[str, Any]) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins or odd callables: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        n
        for n, p in params.items()
        if n not in ("num_classes", "in_channels")
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(
            f"model '{name}' does not accept option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no options'}."
        )


def create(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> Classifier:
    """Build a registered model; `mean` / `std` (per input channel) default to the architecture's own
    statistics: the identity 0 / 1, except for the DeepMind models (their CIFAR constants).

    `wrn-D-K` names (for example `wrn-16-2`) build the Zagoruyko & Komodakis wide ResNet of
    depth D and widen factor K, `dm-wrn-D-K` the DeepMind variant.
    """
    arch = resolve(name)
    canonical = _REGISTRY.resolve(arch)
    factory = _REGISTRY.get(canonical)
    try:
        recorded = json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"options of model '{arch}' must be JSON-serialisable: {error}.") from None
    call_kwargs = dict(kwargs)
    if canonical in _FAMILIES and arch != canonical:
        depth, widen = parse_wrn(arch)  # type: ignore[misc]
        clash = sorted({"depth", "widen_factor"} & set(kwargs))
        if clash:
            raise ConfigError(f"'{arch}' fixes {', '.join(clash)}; drop the option or use '{canonical}'.")
        call_kwargs.update(depth=depth, widen_factor=widen)
    _check_kwargs(arch, factory, call_kwargs)
    model = factory(num_classes=num_classes, in_channels=in_channels, **call_kwargs)
    if not isinstance(model, Classifier):
        raise TypeError(f"factory of model '{arch}' returned {type(model).__name__}, not a Classifier")
    if mean is not None or std is not None:
        model.set_normalization(
            model.mean if mean is None else mean,
            model.std if std is None else std,
        )
    model.arch = arch
    model.arch_kwargs = recorded
    return model
