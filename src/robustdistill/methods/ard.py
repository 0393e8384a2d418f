"""Adversarially robust distillation (Goldblum, Fowl, Feizi & Goldstein, AAAI 2020).

    x' = PGD on CE(S(x'), y)                       (the student is attacked; uniform random start)
    L  = alpha · tau² · KL(p_T(x; tau) || p_S(x'; tau)) + (1 − alpha) · CE(S(x), y),   tau = 30, alpha = 1

The teacher sees the clean input, the student the adversarial one (as in the official code).
With `alpha = 1` the clean student pass is skipped: its term has weight zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import kl_div
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import AdversarialDistillation, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


@dataclass(frozen=True)
class ARDOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    tau: float = option(30.0, gt=0, help="softmax temperature of the distillation term")
    alpha: float = option(1.0, ge=0, le=1, help="weight of the distillation term (1 - alpha: clean cross-entropy)")


@register_method("ard", role="distillation", needs_teacher=True)
class ARD(AdversarialDistillation[ARDOptions]):
    """Distil the teacher's clean soft labels into the student's output on its own adversarial examples."""

    def __init__(self, options: ARDOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def distill(
        self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss="ce", random_start=True)
        with torch.no_grad():
            teacher_clean = self.teacher(x)
        tau, alpha = self.options.tau, self.options.alpha
        logits_adv = student(x_adv)
        distill = kl_div(teacher_clean, logits_adv, tau).mean()
        loss = alpha * tau**2 * distill
        terms = {"kl_distill": distill.detach(), "acc_adv": accuracy(logits_adv, y)}
        if alpha < 1:
            logits_clean = student(x)
            ce = F.cross_entropy(logits_clean, y)
            loss = loss + (1 - alpha) * ce
            terms.update(ce=ce.detach(), acc_clean=accuracy(logits_clean, y))
        return {"loss": loss, **terms}, x_adv, logits_adv
