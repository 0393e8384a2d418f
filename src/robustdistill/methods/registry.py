"""The method registry: one registration per method, with its options type and metadata.

    @register_method("pgd-at", aliases=("madry", "pgd"), role="objective")
    class PGDAT(Method[PGDATOptions]): ...

`spec(name)` is everything known about a method (`MethodSpec`); `available(role)`, `canonical(name)`
and `option_table(name)` answer the listing questions; `create(name, teacher=..., **options)` builds
one from flat options; `resolve_run_options` gives the options of a run, whose attack settings are
the run's.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from robustdistill.errors import ConfigError
from robustdistill.methods.base import Method, Role, RunFacts
from robustdistill.methods.options import OptionRow, Options
from robustdistill.registry import Registry

__all__ = [
    "RUN_ATTACK_KEYS",
    "MethodSpec",
    "available",
    "canonical",
    "create",
    "method_class",
    "option_table",
    "register_method",
    "resolve_run_options",
    "spec",
]

#: attack settings that belong to the run (its `eps`, `step_size`, `steps`, `norm`), not to `method_opts`
RUN_ATTACK_KEYS = ("eps", "step_size", "steps", "norm")

METHODS: Registry[Method[Any]] = Registry("method")
_SPECS: dict[str, MethodSpec] = {}


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its class, options type and what a run must provide for it."""

    name: str
    aliases: tuple[str, ...]
    cls: type[Method[Any]]
    options: type[Options]
    role: Role
    needs_teacher: bool
    needs_natural_teacher: bool
    same_label_space: bool

    @property
    def summary(self) -> str:
        """The first paragraph of the class docstring, on one line."""
        return " ".join((inspect.getdoc(self.cls) or "").split("\n\n")[0].split())

    def validate(self, values: Mapping[str, Any]) -> Options:
        """The method's options from flat `values` over its defaults (ConfigError with a did-you-mean)."""
        return self.options.from_dict(values, owner=f"method '{self.name}'")

    def build(
        self,
        options: Options,
        *,
        teacher: nn.Module | None = None,
        natural_teacher: nn.Module | None = None,
        facts: RunFacts = RunFacts(),
    ) -> Method[Any]:
        """The method from validated options; a teacher it does not use is dropped with a warning."""
        if not isinstance(options, self.options):
            raise ConfigError(f"method '{self.name}' takes {self.options.__name__}, got {type(options).__name__}")
        for role, model, used in (
            ("teacher", teacher, self.needs_teacher),
            ("natural teacher", natural_teacher, self.needs_natural_teacher),
        ):
            if model is not None and not used:
                warnings.warn(f"method '{self.name}' does not use a {role}; it is ignored", stacklevel=3)
        return self.cls(
            options,
            teacher=teacher if self.needs_teacher else None,
            natural_teacher=natural_teacher if self.needs_natural_teacher else None,
            facts=facts,
        )


def _options_type(cls: type) -> type[Options]:
    """The `O` of `class X(Method[O])` (or of the nearest generic base that names one); `Options` if none."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            args = typing.get_args(base)
            if args and isinstance(args[0], type) and issubclass(args[0], Options):
                return args[0]
    return Options


def _check_declaration(name: str, options: type[Options]) -> None:
    """Every field has a default, the flat names are unique, and the defaults are valid."""
    missing = [
        item.name
        for item in dataclasses.fields(options)
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise TypeError(f"method '{name}': options {', '.join(missing)} need a default")
    keys = options.keys()
    if len(keys) != len(set(keys)):
        raise TypeError(f"method '{name}': an option name appears twice in {keys}")
    options()


def register_method(
    name: str,
    *,
    role: Role,
    aliases: tuple[str, ...] = (),
    needs_teacher: bool = False,
    needs_natural_teacher: bool = False,
    same_label_space: bool = True,
) -> Callable[[type[Method[Any]]], type[Method[Any]]]:
    """Class decorator: register a `Method[O]` subclass under `name` (and `aliases`) with its metadata.

    `role` is "objective" (a teacher objective: standard, pgd-at, ...) or "distillation";
    `same_label_space=False` means the method can transfer across label spaces (features only).
    """
    if role not in typing.get_args(Role):
        raise ValueError(f"method '{name}': role must be one of {typing.get_args(Role)}, got {role!r}")

    def decorator(cls: type[Method[Any]]) -> type[Method[Any]]:
        options = _options_type(cls)
        _check_declaration(name, options)
        cls.name, cls.role = name, role
        cls.needs_teacher, cls.needs_natural_teacher, cls.same_label_space = (
            needs_teacher,
            needs_natural_teacher,
            same_label_space,
        )
        METHODS.register(name, aliases=aliases)(cls)
        _SPECS[name] = MethodSpec(
            name, aliases, cls, options, role, needs_teacher, needs_natural_teacher, same_label_space
        )
        return cls

    return decorator


def canonical(name: str) -> str:
    """The registered name of a method or alias; ConfigError with a did-you-mean for an unknown one."""
    return METHODS.resolve(name)


def spec(name: str) -> MethodSpec:
    """Everything the registry knows about a method (name or alias)."""
    return _SPECS[canonical(name)]


def available(role: Role | None = None) -> list[str]:
    """Names of the registered methods, of one role if given."""
    return [name for name in METHODS.names() if role is None or _SPECS[name].role == role]


def method_class(name: str) -> type[Method[Any]]:
    """The class of a registered method."""
    return spec(name).cls


def option_table(name: str) -> list[OptionRow]:
    """Name, default, type, allowed values and help of each option of a method."""
    return spec(name).options.table()


def create(
    name: str,
    *,
    teacher: nn.Module | None = None,
    natural_teacher: nn.Module | None = None,
    num_samples: int | None = None,
    student_dim: int | None = None,
    student_spec: dict[str, Any] | None = None,
    same_label_space: bool = True,
    **options: Any,
) -> Method[Any]:
    """Build a registered method from flat options; the keywords after the teachers are `RunFacts`."""
    entry = spec(name)
    facts = RunFacts(num_samples, student_dim, student_spec, same_label_space)
    return entry.build(entry.validate(options), teacher=teacher, natural_teacher=natural_teacher, facts=facts)


def resolve_run_options(name: str, method_opts: Mapping[str, Any], run_attack: Mapping[str, Any]) -> Options:
    """A run's options: `method_opts` over the defaults, with the run's attack settings where the method has them.

    `run_attack` holds the run's `eps`, `step_size`, `steps`, `norm` (a None is left to the method's
    default). They are the run's alone: a method option that would set one (and so train at another
    eps than the one evaluation and the report use) is refused.
    """
    entry = spec(name)
    keys = entry.options.keys()
    owned = [key for key in RUN_ATTACK_KEYS if key in keys]
    clash = [key for key in owned if key in method_opts]
    if clash:
        key, value = clash[0], method_opts[clash[0]]
        raise ConfigError(
            f"'{key}' is a setting of the run, not a method option: set the run's {key} ({key}={value} on the "
            f"command line, '{key}: {value}' in the config) instead of method_opts.{key}, so that training, "
            f"evaluation and the report use one {key}"
        )
    values = {key: run_attack[key] for key in owned if run_attack.get(key) is not None}
    return entry.validate({**values, **method_opts})
