"""Declared options: frozen dataclasses whose fields carry their type, default, range and help.

    @dataclass(frozen=True)
    class KDOptions(Options):
        tau: float = option(4.0, gt=0, help="softmax temperature")
        alpha: float = option(0.9, ge=0, le=1, help="weight of the distillation term")

Building one validates every field from its annotation and metadata (ConfigError on a wrong type, a
value out of range or not among a `Literal`'s choices, with a did-you-mean) and then runs `check()`,
the rules across fields. Values are taken as YAML and `--method-opt` give them: an integer for a
float, an integral float or a numeric string for an integer, a list for a tuple, a choice of a
`Literal` in any case (stored lower-cased); booleans are not numbers and every float is finite.

A field whose type is itself `Options` (a method's `attack`) is flat in the dict forms: `from_dict`
takes its keys next to the method's own (unknown keys fail with a did-you-mean) and `to_dict` writes
them so, YAML-safe, and `from_dict(o.to_dict()) == o`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar, Union

from robustdistill.errors import ConfigError

__all__ = ["OptionRow", "Options", "option"]

OptionsT = TypeVar("OptionsT", bound="Options")


def option(
    default: Any,
    *,
    help: str,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with a default, a help text and bounds (`gt` >, `ge` >=, `lt` <, `le` <=)."""
    bounds = {key: value for key, value in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if value is not None}
    return dataclasses.field(default=default, metadata={"help": help, "bounds": bounds})


class OptionRow(NamedTuple):
    """One line of a method's option table (`robustdistill methods NAME`)."""

    name: str
    default: Any
    type: str
    allowed: str
    help: str


class _Mismatch(Exception):
    """A value that does not have the annotated type (turned into a ConfigError by the caller)."""


def _describe(hint: Any) -> str:
    """The annotation in words: "a number", "an integer", "a list of integers", "none", ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arm) for arm in args)
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin is tuple:
        return f"a list of {_describe(args[0]).split(' ', 1)[1]}s"
    words = {float: "a number", int: "an integer", bool: "true or false", str: "a string", type(None): "none"}
    if hint in words:
        return words[hint]
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _wanted(hint: Any, bounds: Mapping[str, float]) -> str:
    """What a field accepts, in words: "a number in [0, 1]", "an integer >= 1, or none", ..."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    kinds = [arm for arm in arms if arm is not type(None)]
    limits = _bounds_text(bounds)
    text = " or ".join(_describe(arm) for arm in kinds) + (f" {limits}" if limits else "")
    return text + (", or none" if len(kinds) < len(arms) else "")


def _bounds_text(bounds: Mapping[str, float]) -> str:
    """The bounds in words: "> 0", ">= 1", "in [0, 1)", "<= 1000"."""
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = ("]", bounds["le"]) if "le" in bounds else (")", bounds["lt"]) if "lt" in bounds else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"
    return ""


def _type_name(hint: Any) -> str:
    """The annotation for a table: "float", "int | None", "list[int]", "str", ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(arm) for arm in args)
    if origin is Literal:
        return "str"
    if origin is tuple:
        return f"list[{_type_name(args[0])}]"
    if origin in (dict, Mapping):
        return "dict"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _in_bounds(value: float, bounds: Mapping[str, float]) -> bool:
    return (
        ("gt" not in bounds or value > bounds["gt"])
        and ("ge" not in bounds or value >= bounds["ge"])
        and ("lt" not in bounds or value < bounds["lt"])
        and ("le" not in bounds or value <= bounds["le"])
    )


def _coerce(value: Any, hint: Any, bounds: Mapping[str, float]) -> Any:
    """`value` as the type `hint`, within `bounds` (numbers, also inside tuples); raises _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        for arm in args:
            try:
                return _coerce(value, arm, bounds)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        word = value.strip().lower() if isinstance(value, str) else value
        if word not in args:
            raise _Mismatch
        return word
    if hint is type(None):
        if value is not None:
            raise _Mismatch
        return None
    if hint is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _Mismatch
        return value
    if hint in (int, float):
        number = _number(value, integer=hint is int)
        if not _in_bounds(number, bounds):
            raise _Mismatch
        return number
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _Mismatch
        return tuple(_coerce(item, args[0], bounds) for item in value)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if isinstance(hint, type) and issubclass(hint, Options):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported option annotation {hint!r}")


def _number(value: Any, *, integer: bool) -> int | float:
    """An int (also from an integral float or a numeric string) or a finite float; raises _Mismatch."""
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, str):
        try:
            value = int(value) if integer else float(value)
        except ValueError:
            raise _Mismatch from None
    if integer:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise _Mismatch
        return value
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Mismatch
    return float(value)


def _choices(hint: Any) -> tuple[Any, ...]:
    """The values a `Literal` annotation (also inside `X | None`) allows; empty for any other."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (Union, types.UnionType):
        return tuple(choice for arm in typing.get_args(hint) for choice in _choices(arm))
    return ()


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The evaluated annotations of an options class (the class must be defined at module level)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _did_you_mean(word: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1) if isinstance(word, str) else []
    return f" Did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True)
class Options:
    """Base class of declared options (the module docstring); with no fields, the options of a method without any."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            bounds = item.metadata.get("bounds", {})
            try:
                coerced = _coerce(value, hints[item.name], bounds)
            except _Mismatch:
                raise ConfigError(
                    f"option '{item.name}' must be {_wanted(hints[item.name], bounds)}, got {value!r}."
                    + _did_you_mean(value, [str(choice) for choice in _choices(hints[item.name])])
                ) from None
            object.__setattr__(self, item.name, coerced)
        self.check()

    def check(self) -> None:
        """The rules across fields (ConfigError); a subclass may also normalise a field here with `_set`."""

    def _set(self, name: str, value: Any) -> None:
        """Replace a field's value inside `check` (the dataclass is frozen to everyone else)."""
        object.__setattr__(self, name, value)

    @classmethod
    def nested(cls) -> dict[str, type[Options]]:
        """The fields whose type is itself `Options` (a method's `attack`): flat in `from_dict` and `to_dict`."""
        hints = _hints(cls)
        return {
            item.name: hints[item.name]
            for item in dataclasses.fields(cls)
            if isinstance(hints[item.name], type) and issubclass(hints[item.name], Options)
        }

    @classmethod
    def keys(cls) -> list[str]:
        """The flat option names: the own fields, then those of each nested `Options` field."""
        nested = cls.nested()
        own = [item.name for item in dataclasses.fields(cls) if item.name not in nested]
        return own + [key for inner in nested.values() for key in inner.keys()]  # noqa: SIM118 (a classmethod)

    @classmethod
    def from_dict(cls: type[OptionsT], values: Mapping[str, Any], *, owner: str = "these options") -> OptionsT:
        """Options from flat `values` over the defaults; an unknown key fails with a did-you-mean."""
        known = cls.keys()
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"{owner} has no option '{key}'.{_did_you_mean(key, known)} Options: {', '.join(known) or 'none'}"
                )
        nested = cls.nested()
        fields = {item.name for item in dataclasses.fields(cls)}
        own = {key: value for key, value in values.items() if key in fields and key not in nested}
        for name, inner in nested.items():
            mine = {key: values[key] for key in inner.keys() if key in values}  # noqa: SIM118 (a classmethod)
            if mine:
                own[name] = dataclasses.replace(getattr(cls(), name), **mine)
        return cls(**own)

    def to_dict(self) -> dict[str, Any]:
        """The flat, YAML-safe form (tuples as lists, nested options inlined); `from_dict` reads it back."""
        out: dict[str, Any] = {}
        nested: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Options):
                nested.update(value.to_dict())
            elif isinstance(value, (tuple, Mapping)):
                out[item.name] = list(value) if isinstance(value, tuple) else dict(value)
            else:
                out[item.name] = value
        return {**out, **nested}

    @classmethod
    def table(cls) -> list[OptionRow]:
        """Name, default, type, allowed values and help of every flat option."""
        hints, nested = _hints(cls), cls.nested()
        defaults = cls().to_dict()
        rows: list[OptionRow] = []
        for item in dataclasses.fields(cls):
            if item.name not in nested:
                hint, bounds = hints[item.name], item.metadata.get("bounds", {})
                allowed = ", ".join(map(str, _choices(hint))) or _bounds_text(bounds)
                help_text = item.metadata.get("help", "")
                rows.append(OptionRow(item.name, defaults[item.name], _type_name(hint), allowed, help_text))
        for inner in nested.values():
            rows.extend(row._replace(default=defaults[row.name]) for row in inner.table())
        return rows
