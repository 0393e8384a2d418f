"""Robust soft label adversarial distillation, RSLAD (Zi, Zhao, Ma & Jiang, "Revisiting Adversarial
Robustness Distillation: Robust Soft Labels Make Student Better", ICCV 2021).

    x' = PGD on KL(p_T(x) || p_S(x')) from x + 0.001·N(0, 1)        (the student is attacked)
    L  = lambda_adv · KL(p_T(x) || p_S(x')) + lambda_nat · KL(p_T(x) || p_S(x)),
         lambda_adv = 5/6, lambda_nat = 1/6

The teacher's clean soft labels `p_T(x)` are computed once per batch (no gradient) and serve both
the attack and the two terms. With `lambda_nat = 0` the clean student pass is skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import KLToSoftLabels
from robustdistill.errors import ConfigError
from robustdistill.methods.base import AdversarialDistillation, AttackSettings, accuracy, check_positive, kl_batchmean
from robustdistill.methods.registry import register_method


@register_method("rslad")
class RSLAD(AdversarialDistillation):
    """Replace hard labels by the robust teacher's clean soft labels, in the attack and in the loss."""

    needs_teacher = True

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        lambda_adv: float = 5 / 6,
        lambda_nat: float = 1 / 6,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(teacher=teacher)
        self.lambda_adv = check_positive("lambda_adv", lambda_adv, allow_zero=True)
        self.lambda_nat = check_positive("lambda_nat", lambda_nat, allow_zero=True)
        if self.lambda_adv == 0 and self.lambda_nat == 0:
            raise ConfigError("options 'lambda_adv' and 'lambda_nat' are both 0: give at least one a weight > 0")
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )

    def distill(
        self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        with torch.no_grad():
            teacher_clean = self.teacher(x)
            soft_labels = F.softmax(teacher_clean.float(), dim=1)
        x_adv = self.attack.perturb(student, x, y, index, loss=KLToSoftLabels(soft_labels), random_start="normal")
        logits_adv = student(x_adv)
        kl_adv = kl_batchmean(teacher_clean, logits_adv)
        loss = self.lambda_adv * kl_adv
        terms = {"kl_adv": kl_adv.detach(), "acc_adv": accuracy(logits_adv, y)}
        if self.lambda_nat > 0:
            logits_clean = student(x)
            kl_nat = kl_batchmean(teacher_clean, logits_clean)
            loss = loss + self.lambda_nat * kl_nat
            terms.update(kl_nat=kl_nat.detach(), acc_clean=accuracy(logits_clean, y))
        return {"loss": loss, **terms}, x_adv, logits_adv

    def options(self) -> dict[str, object]:
        return {"lambda_adv": self.lambda_adv, "lambda_nat": self.lambda_nat, **self.attack.as_dict()}
