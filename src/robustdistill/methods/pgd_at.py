"""PGD adversarial training (Madry et al., ICLR 2018).

x' = PGD on CE(M(x'), y) from a uniform random start
L  = CE(M(x'), y)

With `clean_fraction = f > 0` the first round(f B) images of each (shuffled) batch stay
clean and only the rest are attacked, L = CE over the mixed batch: the mixed batches of
Goodfellow et al. (ICLR 2015) and the `ae_frac` of Croce et al. (AISTATS 2019), whose
Fashion-MNIST PGD-AT anchor used f = 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


@dataclass(frozen=True)
class PGDATOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    clean_fraction: float = option(0.0, ge=0, lt=1, help="share of each batch kept clean (Goodfellow 2015's mix)")


@register_method("pgd-at", aliases=("madry", "pgd"), role="objective")
class PGDAT(Method[PGDATOptions]):
    """Minimise the cross-entropy of the worst-case input found by PGD."""

    def __init__(self, options: PGDATOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        n_clean = round(self.options.clean_fraction * x.shape[0])
        x_adv = self.attack.perturb(student, x[n_clean:], y[n_clean:], index[n_clean:], loss="ce")
        logits = student(torch.cat([x[:n_clean], x_adv]))
        loss = F.cross_entropy(logits, y)
        logits_adv = logits[n_clean:]
        return {
            "loss": loss,
            "ce_adv": F.cross_entropy(logits_adv.detach(), y[n_clean:]),
            "acc_adv": accuracy(logits_adv, y[n_clean:]),
        }
