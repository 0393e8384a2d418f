"""Dynamic guidance adversarial distillation, DGAD (Park & Min, "Dynamic Guidance Adversarial Distillation
with Enhanced Teacher Knowledge", ECCV 2024), as in the official `main.py` (method `DGAD`) of github
kunsaram01/DGAD.

    x'     = PGD on KL(p_T(x') || p_S(x')) from x + 0.001·N(0, 1)     (AdaAD's inner maximisation: the
                                                                      student is attacked, the teacher
                                                                      queried at the moving point)
    m_i    = [argmax T(x_i) ≠ y_i]                                   misclassification-aware partitioning
    T̂(x)   = T(x) with the logits of y and argmax_c T(x)_c swapped where m_i               (label swapping)
    T̂(x')  = T(x') with the logits of y and argmax_{c≠y} T(x')_c swapped where T(x')_y < max_{c≠y} T(x')_c
    L      = mean_i [ m_i · KL(p_T̂(x_i) || p_S(x_i)) + (1 − m_i) · KL(p_T̂(x'_i) || p_S(x'_i)) ]
             + beta · mean_{i,c} (p_S(x'_i)_c − p_S(x_i)_c)²                 (predictive consistency)
    beta = 1

Samples the teacher gets wrong on `x` are distilled on `x` only (standard training), the others on `x'`
only (adversarial training). Swapping two logits swaps the two probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import KLToModel, kl_div
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


def swap_logits(logits: Tensor, first: Tensor, second: Tensor, where: Tensor) -> Tensor:
    """`logits` with entries `first_i` and `second_i` of row `i` exchanged where `where_i`, shape (B, C)."""
    a = logits.gather(1, first[:, None])
    b = logits.gather(1, second[:, None])
    swapped = logits.scatter(1, first[:, None], b).scatter(1, second[:, None], a)
    return torch.where(where[:, None], swapped, logits)


def corrected_clean(teacher_clean: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """`(T̂(x), m)`: where the teacher misclassifies `x` (`m`), its top logit and the true class's trade places."""
    top = teacher_clean.argmax(dim=1)
    wrong = top != y
    return swap_logits(teacher_clean, y, top, wrong), wrong


def corrected_adversarial(teacher_adv: Tensor, y: Tensor) -> Tensor:
    """`T̂(x')`: where the true logit is below the best other one, the two trade places."""
    is_label = F.one_hot(y, teacher_adv.shape[1]).bool()
    runner_up = teacher_adv.masked_fill(is_label, float("-inf")).argmax(dim=1)
    margin = teacher_adv.gather(1, y[:, None]).squeeze(1) - teacher_adv.gather(1, runner_up[:, None]).squeeze(1)
    return swap_logits(teacher_adv, y, runner_up, margin < 0)


@dataclass(frozen=True)
class DGADOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    beta: float = option(1.0, ge=0, help="weight of the predictive-consistency term")


@register_method("dgad", role="distillation", needs_teacher=True)
class DGAD(Method[DGADOptions]):
    """Distil on x where the teacher is wrong and on x' where it is right, from label-swapped teacher outputs."""

    def __init__(self, options: DGADOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss=KLToModel(self.teacher), random_start="normal")
        logits_clean = student(x)
        logits_adv = student(x_adv)
        with torch.no_grad():
            teacher_clean, teacher_adv = self.teacher(torch.cat([x, x_adv])).float().chunk(2)
            target_clean, standard = corrected_clean(teacher_clean, y)
            target_adv = corrected_adversarial(teacher_adv, y)
            standard = standard.float()
        kl_clean = kl_div(target_clean, logits_clean)
        kl_adv = kl_div(target_adv, logits_adv)
        partitioned = (standard * kl_clean + (1 - standard) * kl_adv).mean()
        consistency = (F.softmax(logits_adv.float(), dim=1) - F.softmax(logits_clean.float(), dim=1)).pow(2).mean()
        return {
            "loss": partitioned + self.options.beta * consistency,
            "kl_partitioned": partitioned.detach(),
            "consistency": consistency.detach(),
            "standard_fraction": standard.mean(),
            "acc_adv": accuracy(logits_adv, y),
            "acc_clean": accuracy(logits_clean, y),
        }
