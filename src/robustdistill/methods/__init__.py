"""Training objectives: teacher training (standard, pgd-at, fgsm-rs, trades, mart) and distillation
(kd, ard, iad, rslad, adaad, mtard, paths, gacd, igdm, saad, dgad, peeraid).

Each method is one module: a frozen options dataclass (`Options`, with an `attack` field for its inner
maximisation) and a `Method[ThoseOptions]` class registered with `register_method`. `create(name,
teacher=..., **options)` builds one; `spec(name)`, `available(role)`, `canonical(name)` and
`option_table(name)` describe them. Every module of this package is imported here, so each registers.
"""

import importlib
import pkgutil

from robustdistill.methods.attack import AttackOptions, AttackSettings, PGDOptions
from robustdistill.methods.base import AdversarialDistillation, Method, RunFacts
from robustdistill.methods.options import OptionRow, Options, option
from robustdistill.methods.registry import (
    RUN_ATTACK_KEYS,
    MethodSpec,
    available,
    canonical,
    create,
    method_class,
    option_table,
    register_method,
    resolve_run_options,
    spec,
)

_MACHINERY = ("attack", "base", "options", "registry")
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _MACHINERY and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "RUN_ATTACK_KEYS",
    "AdversarialDistillation",
    "AttackOptions",
    "AttackSettings",
    "Method",
    "MethodSpec",
    "OptionRow",
    "Options",
    "PGDOptions",
    "RunFacts",
    "available",
    "canonical",
    "create",
    "method_class",
    "option",
    "option_table",
    "register_method",
    "resolve_run_options",
    "spec",
]
