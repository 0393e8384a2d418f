"""Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015).

no inner maximisation
L = alpha · tau² · KL(p_T(x; tau) || p_S(x; tau)) + (1 − alpha) · CE(S(x), y),   tau = 4, alpha = 0.9

"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import kl_div
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


@dataclass(frozen=True)
class KDOptions(Options):
    tau: float = option(4.0, gt=0, help="softmax temperature of both distributions")
    alpha: float = option(0.9, ge=0, le=1, help="weight of the distillation term (1 - alpha: cross-entropy)")


@register_method("kd", aliases=("hinton",), role="distillation", needs_teacher=True)
class KD(Method[KDOptions]):
    """Match the teacher's softened clean distribution, mixed with the hard-label cross-entropy."""

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        tau, alpha = self.options.tau, self.options.alpha
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        logits = student(x)
        distill = kl_div(teacher_logits, logits, tau).mean()
        ce = F.cross_entropy(logits, y)
        loss = alpha * tau**2 * distill + (1 - alpha) * ce
        return {
            "loss": loss,
            "kl_distill": distill.detach(),
            "ce": ce.detach(),
            "acc_clean": accuracy(logits, y),
        }
