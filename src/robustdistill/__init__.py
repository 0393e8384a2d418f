"""robustdistill: adversarially robust knowledge distillation in one toolkit.

Sub-packages are imported on first use, so `import robustdistill as rd` stays fast:
`rd.attacks`, `rd.methods`, `rd.models`, `rd.data`, `rd.train`, `rd.evaluate`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("attacks", "methods", "models", "data", "train", "evaluate", "config")


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        module = importlib.import_module(f"robustdistill.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'robustdistill' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBPACKAGES])
