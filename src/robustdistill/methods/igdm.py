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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from robustdistill.attacks import kl_div
from robustdistill.errors import ConfigError
from robustdistill.methods.attack import AttackOptions
from robustdistill.methods.base import AdversarialDistillation, Method
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method, spec


def logit_difference_kl(
    teacher_plus: Tensor, teacher_minus: Tensor, student_plus: Tensor, student_minus: Tensor
) -> Tensor:
    """Per-sample `KL(softmax(T(x + d) − T(x − d)) || softmax(S(x + d) − S(x − d)))`, shape (B,)."""
    return kl_div(teacher_plus.float() - teacher_minus.float(), student_plus.float() - student_minus.float())


@dataclass(frozen=True)
class IGDMOptions(Options):
    """igdm's own options; `base_opts` holds the base method's others (its attack is igdm's `attack`)."""

    attack: AttackOptions = field(default_factory=AttackOptions)
    base: Literal["adaad", "ard", "rslad"] = option("adaad", help="the adversarial distillation IGDM is added to")
    alpha: float = option(1.0, ge=0, help="weight of the IGDM term at the end of its ramp")
    ramp_epochs: int = option(200, ge=1, help="epochs over which the IGDM weight rises linearly to alpha")
    base_opts: Mapping[str, Any] | None = option(None, help="the base method's options, without its attack settings")

    def check(self) -> None:
        attack_keys = self.attack.keys()
        clash = sorted(set(self.base_opts or {}) & set(attack_keys))
        if clash:
            raise ConfigError(f"give the attack settings ({', '.join(clash)}) to igdm itself, not in 'base_opts'")
        resolved = self.base_options().to_dict()
        self._set("base_opts", {key: value for key, value in resolved.items() if key not in attack_keys})

    def base_options(self) -> Options:
        """The base method's options: `base_opts` with igdm's attack."""
        values = {**(self.base_opts or {}), **self.attack.to_dict()}
        return spec(self.base).validate(values)


@register_method("igdm", role="distillation", needs_teacher=True)
class IGDM(Method[IGDMOptions]):
    """The base method's loss plus the match of the teacher's and the student's symmetric logit differences."""

    def __init__(self, options: IGDMOptions, **context: Any) -> None:
        super().__init__(options, **context)
        base = spec(options.base).build(options.base_options(), teacher=self.teacher, facts=self.facts)
        assert isinstance(base, AdversarialDistillation)
        self.base: AdversarialDistillation[Any] = base

    @property
    def weight(self) -> float:
        """`alpha · (e + 1) / ramp_epochs` for the epoch set by `on_epoch_start`."""
        return self.options.alpha * (self.epoch + 1) / self.options.ramp_epochs

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
