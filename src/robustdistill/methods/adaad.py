"""Adaptive adversarial distillation, AdaAD (Huang, Chen, Wang, Lu, Cheng & Wang, "Boosting Accuracy and
Robustness of Student Models via Adaptive Adversarial Distillation", CVPR 2023).

    x' = PGD on KL(p_T(x') || p_S(x')) from x + 0.001·N(0, 1)   (the student is attacked; the teacher
                                                                 is queried at the moving point)
    L  = alpha · KL(p_T(x') || p_S(x')) + (1 − alpha) · KL(p_T(x) || p_S(x)),   alpha = 1

With `alpha = 1` (the default) the clean term has weight zero and neither network sees `x` after the
attack: no forward pass is spent on it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustdistill.attacks import KLToModel
from robustdistill.methods.base import AdversarialDistillation, AttackSettings, accuracy, kl_batchmean
from robustdistill.methods.kd import check_fraction
from robustdistill.methods.registry import register_method


@register_method("adaad")
class AdaAD(AdversarialDistillation):
    """Search for the points where student and teacher disagree most, and match the teacher there."""

    needs_teacher = True

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        alpha: float = 1.0,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(teacher=teacher)
        self.alpha = check_fraction("alpha", alpha)
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )

    def distill(
        self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss=KLToModel(self.teacher), random_start="normal")
        with torch.no_grad():
            teacher_adv = self.teacher(x_adv)
        logits_adv = student(x_adv)
        kl_adv = kl_batchmean(teacher_adv, logits_adv)
        loss = self.alpha * kl_adv
        terms = {"kl_adv": kl_adv.detach(), "acc_adv": accuracy(logits_adv, y)}
        if self.alpha < 1:
            with torch.no_grad():
                teacher_clean = self.teacher(x)
            logits_clean = student(x)
            kl_nat = kl_batchmean(teacher_clean, logits_clean)
            loss = loss + (1 - self.alpha) * kl_nat
            terms.update(kl_nat=kl_nat.detach(), acc_clean=accuracy(logits_clean, y))
        return {"loss": loss, **terms}, x_adv, logits_adv

    def options(self) -> dict[str, object]:
        return {"alpha": self.alpha, **self.attack.as_dict()}
