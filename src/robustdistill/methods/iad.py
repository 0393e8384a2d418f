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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.methods.base import AttackSettings, Method, accuracy, check_positive, kl_batchmean, kl_div
from robustdistill.methods.kd import check_count, check_fraction, check_temperature
from robustdistill.methods.registry import register_method


@register_method("iad", aliases=("iad-i",))
class IAD(Method):
    """ARD plus a self-introspection term weighted by how little the teacher trusts itself on x'."""

    needs_teacher = True

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        tau: float = 1.0,
        alpha: float = 1.0,
        alpha_intro: float | None = None,
        beta: float = 0.1,
        warmup_epochs: int = 60,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(teacher=teacher)
        self.tau = check_temperature("tau", tau)
        self.alpha = check_fraction("alpha", alpha)
        if alpha_intro is not None:
            alpha_intro = check_positive("alpha_intro", alpha_intro, allow_zero=True)
        self.alpha_intro = self.alpha if alpha_intro is None else alpha_intro
        self.beta = check_positive("beta", beta, allow_zero=True)
        self.warmup_epochs = check_count("warmup_epochs", warmup_epochs)
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )

    @property
    def introspecting(self) -> bool:
        """Whether the introspection term is on (the epoch set by `on_epoch_start` is past the warm-up)."""
        return self.epoch >= self.warmup_epochs

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss="ce", random_start=True)
        introspect = self.introspecting
        with torch.no_grad():
            teacher_clean = self.teacher(x)
            if introspect:
                teacher_adv = self.teacher(x_adv)
                trust = F.softmax(teacher_adv.float(), dim=1).gather(1, y[:, None]).squeeze(1).pow(self.beta)
        logits_adv = student(x_adv)
        distill = kl_batchmean(teacher_clean, logits_adv, self.tau)
        loss = self.alpha * self.tau**2 * distill
        terms = {"kl_distill": distill.detach(), "acc_adv": accuracy(logits_adv, y)}
        logits_clean = student(x) if introspect or self.alpha < 1 else None
        if introspect:
            assert logits_clean is not None
            intro = ((1 - trust) * kl_div(logits_clean, logits_adv)).mean()
            loss = loss + self.alpha_intro * intro
            terms.update(kl_introspection=intro.detach(), teacher_trust=trust.mean())
        if self.alpha < 1:
            assert logits_clean is not None
            ce = F.cross_entropy(logits_clean, y)
            loss = loss + (1 - self.alpha) * ce
            terms["ce"] = ce.detach()
        if logits_clean is not None:
            terms["acc_clean"] = accuracy(logits_clean, y)
        return {"loss": loss, **terms}

    def options(self) -> dict[str, object]:
        return {
            "tau": self.tau,
            "alpha": self.alpha,
            "alpha_intro": self.alpha_intro,
            "beta": self.beta,
            "warmup_epochs": self.warmup_epochs,
            **self.attack.as_dict(),
        }
