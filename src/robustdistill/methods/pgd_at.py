"""PGD adversarial training (Madry et al., ICLR 2018).

x' = PGD on CE(M(x'), y) from a uniform random start
L  = CE(M(x'), y)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.methods.base import AttackSettings, Method, accuracy
from robustdistill.methods.registry import register_method


@register_method("pgd-at", aliases=("madry", "pgd"))
class PGDAT(Method):
    """Minimise the cross-entropy of the worst-case input found by PGD."""

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss="ce")
        logits_adv = student(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        return {"loss": loss, "ce_adv": loss.detach(), "acc_adv": accuracy(logits_adv, y)}

    def options(self) -> dict[str, object]:
        return self.attack.as_dict()
