"""Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015).

    no inner maximisation
    L = alpha · tau² · KL(p_T(x; tau) || p_S(x; tau)) + (1 − alpha) · CE(S(x), y),   tau = 4, alpha = 0.9

`check_fraction` and `check_count` below validate the options shared by the distillation baselines.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.methods.base import Method, accuracy, check_positive, kl_batchmean
from robustdistill.methods.registry import register_method


def check_fraction(name: str, value: Any) -> float:
    """A number in [0, 1] (a mixing weight), else ConfigError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option '{name}' must be a number in [0, 1], got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ConfigError(f"option '{name}' must be a number in [0, 1], got {value!r}")
    return number


def check_count(name: str, value: Any) -> int:
    """An integer >= 0 (a number of epochs), else ConfigError."""
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or value < 0:
        raise ConfigError(f"option '{name}' must be an integer >= 0, got {value!r}")
    return int(value)


def check_temperature(name: str, value: Any) -> float:
    """A finite number > 0, else ConfigError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option '{name}' must be a number > 0, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigError(f"option '{name}' must be a finite number > 0, got {value!r}")
    return check_positive(name, number)


@register_method("kd", aliases=("hinton",))
class KD(Method):
    """Match the teacher's softened clean distribution, mixed with the hard-label cross-entropy."""

    needs_teacher = True

    def __init__(self, *, teacher: nn.Module | None = None, tau: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__(teacher=teacher)
        self.tau = check_temperature("tau", tau)
        self.alpha = check_fraction("alpha", alpha)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        logits = student(x)
        distill = kl_batchmean(teacher_logits, logits, self.tau)
        ce = F.cross_entropy(logits, y)
        loss = self.alpha * self.tau**2 * distill + (1 - self.alpha) * ce
        return {
            "loss": loss,
            "kl_distill": distill.detach(),
            "ce": ce.detach(),
            "acc_clean": accuracy(logits, y),
        }

    def options(self) -> dict[str, object]:
        return {"tau": self.tau, "alpha": self.alpha}
