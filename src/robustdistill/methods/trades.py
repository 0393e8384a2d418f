"""TRADES (Zhang et al., ICML 2019).

x' = PGD on KL(p_M(x) || p_M(x')) from x + 0.001·N(0, 1)
L  = CE(M(x), y) + beta · KL(p_M(x) || p_M(x')),   beta = 6
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import KLToSoftLabels, kl_div
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


@dataclass(frozen=True)
class TRADESOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    beta: float = option(6.0, ge=0, help="weight of the robust KL term")


@register_method("trades", role="objective")
class TRADES(Method[TRADESOptions]):
    """Trade natural accuracy against the KL divergence between clean and adversarial outputs."""

    def __init__(self, options: TRADESOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

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
        robust = kl_div(logits_clean, logits_adv).mean()
        loss = ce + self.options.beta * robust
        return {
            "loss": loss,
            "ce": ce.detach(),
            "kl_robust": robust.detach(),
            "acc_clean": accuracy(logits_clean, y),
            "acc_adv": accuracy(logits_adv, y),
        }
