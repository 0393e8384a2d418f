"""Training objectives: teacher training (standard, pgd-at, fgsm-rs, trades, mart) and distillation
(kd, ard, iad, rslad, adaad, mtard, paths, gacd, igdm, saad, dgad, peeraid).

`create(name, teacher=..., **options)` builds one; `available()` lists them. Every module of this
package registers its method on import, and all of them are imported here.
"""

import importlib
import pkgutil

from robustdistill.methods.base import AttackSettings, Method, kl_batchmean, kl_div
from robustdistill.methods.registry import available, create, method_class, option_names, register_method

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry") and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "AttackSettings",
    "Method",
    "available",
    "create",
    "kl_batchmean",
    "kl_div",
    "method_class",
    "option_names",
    "register_method",
]
