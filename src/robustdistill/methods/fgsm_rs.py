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

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.methods.attack import AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


@dataclass(frozen=True)
class FastAttackOptions(Options):
    """FGSM-RS's attack: one step of `step_size` (default 1.25 eps, the paper's) from a uniform start."""

    eps: float = option(8 / 255, gt=0, help="radius of the threat ball (the run's eps)")
    step_size: float | None = option(None, gt=0, help="the step; none: 1.25 eps (the run's step_size)")
    norm: Literal["linf", "l2"] = option("linf", help="threat model (the run's norm)")
    reuse_steps: int = option(0, ge=0, le=1, help="1: start from each sample's stored perturbation (0: no reuse)")

    #: one attack step
    steps: ClassVar[int] = 1
    #: the paper's step size, as a multiple of eps
    step_factor: ClassVar[float] = 1.25


@dataclass(frozen=True)
class FGSMRSOptions(Options):
    attack: FastAttackOptions = field(default_factory=FastAttackOptions)


@register_method("fgsm-rs", aliases=("fast-at",), role="objective")
class FGSMRS(Method[FGSMRSOptions]):
    """Minimise the cross-entropy of a one-step FGSM example taken from a random point of the ball."""

    def __init__(self, options: FGSMRSOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss="ce", random_start="uniform")
        logits_adv = student(x_adv)
        loss = F.cross_entropy(logits_adv, y)
        return {"loss": loss, "ce_adv": loss.detach(), "acc_adv": accuracy(logits_adv, y)}
