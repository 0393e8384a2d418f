"""Introspective adversarial distillation, IAD-I (Zhu et al., "Reliable Adversarial Distillation with
Unreliable Teachers", ICLR 2022), as in the official `IAD-I.py` (github ZFancy/IAD).

    x'  = PGD on CE(S(x'), y)                      (the student is attacked; uniform random start)
    w_i = p_T(y_i | x'_i)^beta                     (teacher's confidence on the adversarial input; detached)
    L   = alpha · tau² · KL(p_T(x; tau) || p_S(x'; tau))                       (ARD's term: teacher on x)
        + alpha_intro · mean_i (1 − w_i) · KL(p_S(x_i) || p_S(x'_i))           (introspection, from epoch
                                                                                `warmup_epochs` on)
        + (1 − alpha) · CE(S(x), y)
    tau = 1, alpha = 1, alpha_intro = alpha, beta = 0.1, warmup_epochs = 60

The teacher-student term is not weighted by `w` in IAD-I (that weighting belongs to IAD-II); the
student's clean distribution in the introspection term is not detached (gradient flows through both
of its arguments, as in the official code).
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


@dataclass(frozen=True)
class IADOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    tau: float = option(1.0, gt=0, help="softmax temperature of ARD's term")
    alpha: float = option(1.0, ge=0, le=1, help="weight of ARD's term (1 - alpha: clean cross-entropy)")
    alpha_intro: float | None = option(None, ge=0, help="weight of the introspection term; none: alpha")
    beta: float = option(0.1, ge=0, help="exponent of the teacher's trust p_T(y|x')")
    warmup_epochs: int = option(60, ge=0, help="epochs before the introspection term is switched on")

    @property
    def introspection_weight(self) -> float:
        """`alpha_intro`, or `alpha` when it is not given."""
        return self.alpha if self.alpha_intro is None else self.alpha_intro


@register_method("iad", aliases=("iad-i",), role="distillation", needs_teacher=True)
class IAD(Method[IADOptions]):
    """ARD plus a self-introspection term weighted by how little the teacher trusts itself on x'."""

    def __init__(self, options: IADOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    @property
    def introspecting(self) -> bool:
        """Whether the introspection term is on (the epoch set by `on_epoch_start` is past the warm-up)."""
        return self.epoch >= self.options.warmup_epochs

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        tau, alpha = self.options.tau, self.options.alpha
        x_adv = self.attack.perturb(student, x, y, index, loss="ce", random_start=True)
        introspect = self.introspecting
        with torch.no_grad():
            teacher_clean = self.teacher(x)
            if introspect:
                teacher_adv = self.teacher(x_adv)
                trust = F.softmax(teacher_adv.float(), dim=1).gather(1, y[:, None]).squeeze(1).pow(self.options.beta)
        logits_adv = student(x_adv)
        distill = kl_div(teacher_clean, logits_adv, tau).mean()
        loss = alpha * tau**2 * distill
        terms = {"kl_distill": distill.detach(), "acc_adv": accuracy(logits_adv, y)}
        logits_clean = student(x) if introspect or alpha < 1 else None
        if introspect:
            assert logits_clean is not None
            intro = ((1 - trust) * kl_div(logits_clean, logits_adv)).mean()
            loss = loss + self.options.introspection_weight * intro
            terms.update(kl_introspection=intro.detach(), teacher_trust=trust.mean())
        if alpha < 1:
            assert logits_clean is not None
            ce = F.cross_entropy(logits_clean, y)
            loss = loss + (1 - alpha) * ce
            terms["ce"] = ce.detach()
        if logits_clean is not None:
            terms["acc_clean"] = accuracy(logits_clean, y)
        return {"loss": loss, **terms}
