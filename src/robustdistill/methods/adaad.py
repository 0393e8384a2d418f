"""Adaptive adversarial distillation, AdaAD (Huang, Chen, Wang, Lu, Cheng & Wang, "Boosting Accuracy and
Robustness of Student Models via Adaptive Adversarial Distillation", CVPR 2023).

    x' = PGD on KL(p_T(x') || p_S(x')) from x + 0.001·N(0, 1)   (the student is attacked; the teacher
                                                                 is queried at the moving point)
    L  = alpha · KL(p_T(x') || p_S(x')) + (1 − alpha) · KL(p_T(x) || p_S(x)),   alpha = 1

With `alpha = 1` (the default) the clean term has weight zero and neither network sees `x` after the
attack: no forward pass is spent on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.attacks import KLToModel, kl_div
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import AdversarialDistillation, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


@dataclass(frozen=True)
class AdaADOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    alpha: float = option(1.0, ge=0, le=1, help="weight of the adversarial term (1 - alpha: the clean one)")


@register_method("adaad", role="distillation", needs_teacher=True)
class AdaAD(AdversarialDistillation[AdaADOptions]):
    """Search for the points where student and teacher disagree most, and match the teacher there."""

    def __init__(self, options: AdaADOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def distill(
        self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss=KLToModel(self.teacher), random_start="normal")
        with torch.no_grad():
            teacher_adv = self.teacher(x_adv)
        alpha = self.options.alpha
        logits_adv = student(x_adv)
        kl_adv = kl_div(teacher_adv, logits_adv).mean()
        loss = alpha * kl_adv
        terms = {"kl_adv": kl_adv.detach(), "acc_adv": accuracy(logits_adv, y)}
        if alpha < 1:
            with torch.no_grad():
                teacher_clean = self.teacher(x)
            logits_clean = student(x)
            kl_nat = kl_div(teacher_clean, logits_clean).mean()
            loss = loss + (1 - alpha) * kl_nat
            terms.update(kl_nat=kl_nat.detach(), acc_clean=accuracy(logits_clean, y))
        return {"loss": loss, **terms}, x_adv, logits_adv
