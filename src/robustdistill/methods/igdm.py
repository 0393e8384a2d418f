"""Indirect gradient matching, IGDM (Lee, Cho & Kim, "Indirect Gradient Matching for Adversarial Robust
Distillation", ICLR 2025), an add-on to a base adversarial distillation, as in the official scripts
(`adaad_IGDM_cifar100.py`, `ard_IGDM_cifar100.py`, `rslad_IGDM_cifar100.py`; `igdm.py` of HongsinLee/saad).

    x', L_base = the base method's adversarial batch and loss            (base = adaad | ard | rslad)
    d          = x' − x
    L_IGDM     = KL(softmax(T(x + d) − T(x − d)) || softmax(S(x + d) − S(x − d)))
    L          = L_base + alpha · (e + 1) / ramp_epochs · L_IGDM          (e: the 0-based epoch)
    alpha = 1 (the CIFAR-10 value; the official CIFAR-100 script uses 20), ramp_epochs = 200

`S(x + d)` is the base's own student pass on `x'`; `x − d` is not clamped to [0, 1] (official code).
The teacher sees `x + d` and `x − d` in one batch, without gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.methods.base import AdversarialDistillation, Method, check_choice, check_positive, kl_div
from robustdistill.methods.registry import create, register_method

BASES = ("adaad", "ard", "rslad")
ATTACK_OPTIONS = ("eps", "step_size", "steps", "norm")


def logit_difference_kl(
    teacher_plus: Tensor, teacher_minus: Tensor, student_plus: Tensor, student_minus: Tensor
) -> Tensor:
    """Per-sample `KL(softmax(T(x + d) − T(x − d)) || softmax(S(x + d) − S(x − d)))`, shape (B,)."""
    return kl_div(teacher_plus.float() - teacher_minus.float(), student_plus.float() - student_minus.float())


def check_ramp(value: Any) -> int:
    """The ramp length in epochs: an integer >= 1, else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"option 'ramp_epochs' must be an integer >= 1, got {value!r}")
    return value


@register_method("igdm")
class IGDM(Method):
    """The base method's loss plus the match of the teacher's and the student's symmetric logit differences."""

    needs_teacher = True

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        base: str = "adaad",
        alpha: float = 1.0,
        ramp_epochs: int = 200,
        base_opts: dict[str, Any] | None = None,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
    ) -> None:
        super().__init__(teacher=teacher)
        self.base_name = check_choice("base", base, BASES)
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        self.ramp_epochs = check_ramp(ramp_epochs)
        if base_opts is not None and not isinstance(base_opts, dict):
            raise ConfigError(f"option 'base_opts' must be a mapping of the base method's options, got {base_opts!r}")
        clash = sorted(set(base_opts or {}) & set(ATTACK_OPTIONS))
        if clash:
            raise ConfigError(f"give the attack settings ({', '.join(clash)}) to igdm itself, not in 'base_opts'")
        attack = {"eps": eps, "step_size": step_size, "steps": steps, "norm": norm}
        self.base = create(self.base_name, teacher=teacher, **attack, **(base_opts or {}))
        assert isinstance(self.base, AdversarialDistillation)

    @property
    def weight(self) -> float:
        """`alpha · (e + 1) / ramp_epochs` for the epoch set by `on_epoch_start`."""
        return self.alpha * (self.epoch + 1) / self.ramp_epochs

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.base.on_epoch_start(epoch)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        terms, x_adv, student_plus = self.base.distill(student, x, y, index)
        x_minus = x - (x_adv - x)
        student_minus = student(x_minus)
        with torch.no_grad():
            teacher_plus, teacher_minus = self.teacher(torch.cat([x_adv, x_minus])).chunk(2)
        igdm = logit_difference_kl(teacher_plus, teacher_minus, student_plus, student_minus).mean()
        return {**terms, "loss": terms["loss"] + self.weight * igdm, "kl_igdm": igdm.detach()}

    def diagnostics(self) -> dict[str, float]:
        return {"igdm_weight": self.weight}

    def options(self) -> dict[str, Any]:
        base = self.base.options()
        return {
            "base": self.base_name,
            "alpha": self.alpha,
            "ramp_epochs": self.ramp_epochs,
            "base_opts": {k: v for k, v in base.items() if k not in ATTACK_OPTIONS},
            **{k: base[k] for k in ATTACK_OPTIONS},
        }
