"""TRADES (Zhang et al., ICML 2019).

x' = PGD on KL(p_M(x) || p_M(x')) from x + 0.001·N(0, 1)
L  = CE(M(x), y) + beta · KL(p_M(x) || p_M(x')),   beta = 6
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import KLToSoftLabels
from robustdistill.methods.base import AttackSettings, Method, accuracy, check_positive, kl_batchmean
from robustdistill.methods.registry import register_method


@register_method("trades")
class TRADES(Method):
    """Trade natural accuracy against the KL divergence between clean and adversarial outputs."""

    def __init__(
        self,
        *,
        beta: float = 6.0,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.beta = check_positive("beta", beta, allow_zero=True)
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        was_training = student.training
        student.eval()
        with torch.no_grad():
            clean_probs = F.softmax(student(x).float(), dim=1)
        student.train(was_training)
        x_adv = self.attack.perturb(student, x, y, index, loss=KLToSoftLabels(clean_probs), random_start="normal")
        # Separate passes, as in the official code: BatchNorm keeps clean and adversarial statistics apart.
        logits_clean, logits_adv = student(x), student(x_adv)
        ce = F.cross_entropy(logits_clean, y)
        robust = kl_batchmean(logits_clean, logits_adv)
        loss = ce + self.beta * robust
        return {
            "loss": loss,
            "ce": ce.detach(),
            "kl_robust": robust.detach(),
            "acc_clean": accuracy(logits_clean, y),
            "acc_adv": accuracy(logits_adv, y),
        }

    def options(self) -> dict[str, object]:
        return {"beta": self.beta, **self.attack.as_dict()}
