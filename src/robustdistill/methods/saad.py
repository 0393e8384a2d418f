"""Sample-wise adaptive adversarial distillation, SAAD (Lee & Chung, "Sample-wise Adaptive Weighting for
Transfer Consistency in Adversarial Distillation", TMLR 2026), as in the official `saad.py` and
`attacks.py` (`saad_inner_loss`) of github HongsinLee/saad.

    g_i   = ∇_x T(x_i)_{y_i}                                  gradient of the teacher's true-class logit at x
    T̃(u)  = T(x) + lambda_inner · <g, u − x> · e_y             first-order teacher at u, true class only
    x'    = PGD on KL(softmax(T̃(x')) || p_S(x')) from x + 0.001·N(0, 1)          (the student is attacked)
    d     = x' − x
    H_i   = H_q(p_T(x'_i))                                     Rényi entropy of order q (q = 1: Shannon's)
    w_i   = s · (H_i − min_j H_j),   v_i = (w_i − min w) / (max w − min w + 1e-8)              (detached)
    L     = mean_i [ w_i · (KL(p_T(x'_i) || p_S(x'_i)) + alpha · (e + 1)/ramp_epochs · IGDM_i)
                     + beta · (1 − v_i) · KL(p_T(x_i) || p_S(x_i)) ]
    lambda_inner = 1, s = entropy_scale = 5, q = entropy_order = 1, alpha = 1, ramp_epochs = 200, beta = 0

`IGDM_i` is igdm's logit-difference term at `x ± d`. With `beta = 0` (the official default) the
clean student pass is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import InnerLoss, kl_div
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.igdm import logit_difference_kl
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method


def renyi_entropy(logits: Tensor, order: float) -> Tensor:
    """Per-sample `H_q(p) = log(sum_c p_c^q) / (1 − q)` of `p = softmax(logits)`; `q = 1` is `−sum_c p_c log p_c`."""
    log_p = F.log_softmax(logits.float(), dim=1)
    if order == 1:
        return -(log_p.exp() * log_p).sum(dim=1)
    return torch.logsumexp(order * log_p, dim=1) / (1 - order)


class CorrectedTeacherKL(InnerLoss):
    """`KL(softmax(T(x) + lambda · <g, u − x> · e_y) || softmax(model(u)))` per sample: SAAD's inner loss.

    The teacher's logits `T(x)` and true-class gradient `g` are fixed for the attack; the correction is
    differentiable in `u`, so the input gradient flows through it and through the attacked model.
    """

    name = "saad-kl"

    def __init__(self, x: Tensor, labels: Tensor, teacher_logits: Tensor, gradient: Tensor, weight: float) -> None:
        self.x = x.detach().float()
        self.teacher_logits = teacher_logits.detach().float()
        self.true_class = F.one_hot(labels, teacher_logits.shape[1]).float()
        self.gradient = gradient.detach().float()
        self.weight = float(weight)

    def corrected_logits(self, u: Tensor) -> Tensor:
        shift = (self.gradient * (u - self.x)).flatten(1).sum(dim=1)
        return self.teacher_logits + self.weight * shift[:, None] * self.true_class

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        return kl_div(self.corrected_logits(x_adv), model(x_adv))


@dataclass(frozen=True)
class SAADOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    lambda_inner: float = option(1.0, ge=0, help="weight of the first-order teacher correction in the attack")
    entropy_scale: float = option(5.0, gt=0, help="s: the sample weights are s (H - min H)")
    entropy_order: float = option(1.0, gt=0, help="q of the teacher's Rényi entropy (1: Shannon's)")
    alpha: float = option(1.0, ge=0, help="weight of the IGDM term at the end of its ramp")
    ramp_epochs: int = option(200, ge=1, help="epochs over which the IGDM weight rises linearly to alpha")
    beta: float = option(0.0, ge=0, help="weight of the clean KL term (0: no clean student pass)")


@register_method("saad", role="distillation", needs_teacher=True)
class SAAD(Method[SAADOptions]):
    """Weight each sample's adversarial and IGDM terms by how uncertain the teacher is at the student's x'."""

    def __init__(self, options: SAADOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    @property
    def igdm_weight(self) -> float:
        """`alpha · (e + 1) / ramp_epochs` for the epoch set by `on_epoch_start`."""
        return self.options.alpha * (self.epoch + 1) / self.options.ramp_epochs

    def teacher_logits_and_gradient(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """`(T(x), ∇_x sum_i T(x_i)_{y_i})`, both detached (the teacher's parameters stay frozen)."""
        x_in = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = self.teacher(x_in)
            (gradient,) = torch.autograd.grad(logits.float().gather(1, y[:, None]).sum(), x_in)
        return logits.detach(), gradient.detach()

    def sample_weights(self, teacher_adv: Tensor) -> tuple[Tensor, Tensor]:
        """`(w, v)`: entropy weights `s · (H − min H)` and their min-max normalisation, detached, (B,)."""
        with torch.no_grad():
            entropy = renyi_entropy(teacher_adv, self.options.entropy_order)
            w = self.options.entropy_scale * (entropy - entropy.min())
            v = (w - w.min()) / (w.max() - w.min() + 1e-8)
        return w, v

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        teacher_clean, gradient = self.teacher_logits_and_gradient(x, y)
        inner = CorrectedTeacherKL(x, y, teacher_clean, gradient, self.options.lambda_inner)
        x_adv = self.attack.perturb(student, x, y, index, loss=inner, random_start="normal")
        x_minus = x - (x_adv - x)
        with torch.no_grad():
            teacher_plus, teacher_minus = self.teacher(torch.cat([x_adv, x_minus])).chunk(2)
        student_plus = student(x_adv)
        student_minus = student(x_minus)
        w, v = self.sample_weights(teacher_plus)
        kl_adv = kl_div(teacher_plus, student_plus)
        igdm = logit_difference_kl(teacher_plus, teacher_minus, student_plus, student_minus)
        per_sample = w * (kl_adv + self.igdm_weight * igdm)
        terms = {"acc_adv": accuracy(student_plus, y), "weight_mean": w.mean()}
        if self.options.beta > 0:
            student_clean = student(x)
            kl_nat = kl_div(teacher_clean, student_clean)
            per_sample = per_sample + self.options.beta * (1 - v) * kl_nat
            terms.update(kl_nat=kl_nat.mean().detach(), acc_clean=accuracy(student_clean, y))
        return {
            "loss": per_sample.mean(),
            "kl_adv": kl_adv.mean().detach(),
            "kl_igdm": igdm.mean().detach(),
            **terms,
        }

    def diagnostics(self) -> dict[str, float]:
        return {"igdm_weight": self.igdm_weight}
