"""Robust soft label adversarial distillation, RSLAD (Zi, Zhao, Ma & Jiang, "Revisiting Adversarial
Robustness Distillation: Robust Soft Labels Make Student Better", ICCV 2021).

    x' = PGD on KL(p_T(x) || p_S(x')) from x + 0.001·N(0, 1)        (the student is attacked)
    L  = lambda_adv · KL(p_T(x) || p_S(x')) + lambda_nat · KL(p_T(x) || p_S(x)),
         lambda_adv = 5/6, lambda_nat = 1/6

The teacher's clean soft labels `p_T(x)` are computed once per batch (no gradient) and serve both
the attack and the two terms. With `lambda_nat = 0` the clean student pass is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import KLToSoftLabels, kl_div
from robustdistill.errors import ConfigError
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import AdversarialDistillation, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


@dataclass(frozen=True)
class RSLADOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    lambda_adv: float = option(5 / 6, ge=0, help="weight of KL(p_T(x) || p_S(x'))")
    lambda_nat: float = option(1 / 6, ge=0, help="weight of KL(p_T(x) || p_S(x))")

    def check(self) -> None:
        if self.lambda_adv == 0 and self.lambda_nat == 0:
            raise ConfigError("options 'lambda_adv' and 'lambda_nat' are both 0: give at least one a weight > 0")


@register_method("rslad", role="distillation", needs_teacher=True)
class RSLAD(AdversarialDistillation[RSLADOptions]):
    """Replace hard labels by the robust teacher's clean soft labels, in the attack and in the loss."""

    def __init__(self, options: RSLADOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def distill(
        self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        with torch.no_grad():
            teacher_clean = self.teacher(x)
            soft_labels = F.softmax(teacher_clean.float(), dim=1)
        x_adv = self.attack.perturb(student, x, y, index, loss=KLToSoftLabels(soft_labels), random_start="normal")
        logits_adv = student(x_adv)
        kl_adv = kl_div(teacher_clean, logits_adv).mean()
        loss = self.options.lambda_adv * kl_adv
        terms = {"kl_adv": kl_adv.detach(), "acc_adv": accuracy(logits_adv, y)}
        if self.options.lambda_nat > 0:
            logits_clean = student(x)
            kl_nat = kl_div(teacher_clean, logits_clean).mean()
            loss = loss + self.options.lambda_nat * kl_nat
            terms.update(kl_nat=kl_nat.detach(), acc_clean=accuracy(logits_clean, y))
        return {"loss": loss, **terms}, x_adv, logits_adv
