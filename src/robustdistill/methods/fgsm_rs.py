"""Fast adversarial training: FGSM from a random start, FGSM-RS (Wong, Rice & Kolter, "Fast is better
than free: Revisiting adversarial training", ICLR 2020).

    delta_0 ~ U(-eps, eps)^d
    x' = Proj(x + delta_0 + alpha · sign ∇_x CE(M(x + delta_0), y)),    alpha = 1.25 · eps
    L  = CE(M(x'), y)

One attack step: a PGD-1 from a uniform start with step `alpha`, projected onto the eps-ball and
[0, 1] (the paper's `clamp(delta, -eps, eps)` and `clamp(x + delta, 0, 1)`). The paper pairs it with
a cyclic learning rate and early stopping against catastrophic overfitting; those are the run's
schedule, not part of the objective.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.methods.base import AttackSettings, Method, accuracy, check_positive
from robustdistill.methods.registry import register_method

#: the paper's step size, as a multiple of eps
STEP_FACTOR = 1.25


@register_method("fgsm-rs", aliases=("fast-at",))
class FGSMRS(Method):
    """Minimise the cross-entropy of a one-step FGSM example taken from a random point of the ball."""

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float | None = None,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        eps = check_positive("eps", eps)
        self.attack = AttackSettings(
            eps=eps,
            step_size=STEP_FACTOR * eps if step_size is None else step_size,
            steps=1,
            norm=norm,
            reuse_steps=reuse_steps,
            num_samples=num_samples,
        )

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss="ce", random_start="uniform")
        logits_adv = student(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        return {"loss": loss, "ce_adv": loss.detach(), "acc_adv": accuracy(logits_adv, y)}

    def options(self) -> dict[str, object]:
        options = self.attack.as_dict()
        options.pop("steps")
        return options
