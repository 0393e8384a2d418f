"""Adversarially robust distillation (Goldblum, Fowl, Feizi & Goldstein, AAAI 2020).

    x' = PGD on CE(S(x'), y)                       (the student is attacked; uniform random start)
    L  = alpha · tau² · KL(p_T(x; tau) || p_S(x'; tau)) + (1 − alpha) · CE(S(x), y),   tau = 30, alpha = 1

The teacher sees the clean input, the student the adversarial one (as in the official code).
With `alpha = 1` the clean student pass is skipped: its term has weight zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.methods.base import AdversarialDistillation, AttackSettings, accuracy, kl_batchmean
from robustdistill.methods.kd import check_fraction, check_temperature
from robustdistill.methods.registry import register_method


@register_method("ard")
class ARD(AdversarialDistillation):
    """Distil the teacher's clean soft labels into the student's output on its own adversarial examples."""

    needs_teacher = True

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        tau: float = 30.0,
        alpha: float = 1.0,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(teacher=teacher)
        self.tau = check_temperature("tau", tau)
        self.alpha = check_fraction("alpha", alpha)
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )

    def distill(
        self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss="ce", random_start=True)
        with torch.no_grad():
            teacher_clean = self.teacher(x)
        logits_adv = student(x_adv)
        distill = kl_batchmean(teacher_clean, logits_adv, self.tau)
        loss = self.alpha * self.tau**2 * distill
        terms = {"kl_distill": distill.detach(), "acc_adv": accuracy(logits_adv, y)}
        if self.alpha < 1:
            logits_clean = student(x)
            ce = F.cross_entropy(logits_clean, y)
            loss = loss + (1 - self.alpha) * ce
            terms.update(ce=ce.detach(), acc_clean=accuracy(logits_clean, y))
        return {"loss": loss, **terms}, x_adv, logits_adv

    def options(self) -> dict[str, object]:
        return {"tau": self.tau, "alpha": self.alpha, **self.attack.as_dict()}
