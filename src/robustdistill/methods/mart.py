"""MART (Wang et al., ICLR 2020): misclassification-aware adversarial training.

x' = PGD on CE(M(x'), y) from x + 0.001·N(0, 1)   (the official start, YisenWang/MART mart.py)
L  = BCE(M(x'), y) + lambda · mean_i KL(p_M(x_i) || p_M(x'_i)) · (1 − p_M(y_i | x_i)),  lambda = 6
BCE(z, y) = −log p_y(z) − log(1 − max_{k≠y} p_k(z))   (boosted cross-entropy)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import kl_div
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


def boosted_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """MART's BCE, averaged over the batch: `CE(z, y) − log(1 − max_{k≠y} p_k)`."""
    probs = F.softmax(logits.float(), dim=1)
    others = probs.scatter(1, y[:, None], 0.0)
    margin = -torch.log(1.0001 - others.max(dim=1).values)
    return F.cross_entropy(logits.float(), y) + margin.mean()


@dataclass(frozen=True)
class MARTOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    lam: float = option(6.0, ge=0, help="weight of the misclassification-weighted KL term")


@register_method("mart", role="objective")
class MART(Method[MARTOptions]):
    """Boosted CE on adversarial inputs plus a KL term weighted toward misclassified samples."""

    def __init__(self, options: MARTOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss="ce", random_start="normal")
        # Separate passes, as in the official code: BatchNorm keeps clean and adversarial statistics apart.
        logits_clean, logits_adv = student(x), student(x_adv)
        bce = boosted_cross_entropy(logits_adv, y)
        p_true = F.softmax(logits_clean.float(), dim=1).gather(1, y[:, None]).squeeze(1)
        robust = (kl_div(logits_clean, logits_adv) * (1 - p_true)).mean()
        loss = bce + self.options.lam * robust
        return {
            "loss": loss,
            "bce_adv": bce.detach(),
            "kl_weighted": robust.detach(),
            "acc_clean": accuracy(logits_clean, y),
            "acc_adv": accuracy(logits_adv, y),
        }
