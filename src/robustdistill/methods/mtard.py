"""Multi-teacher adversarial robustness distillation, MTARD (Zhao, Yu, Sun, Zhang & Wei, "Enhanced Accuracy
and Robustness via Multi-Teacher Adversarial Distillation", ECCV 2022), as in the official code
(github zhaoshiji123/MTARD, `mtard/mtard_resnet18_cifar10.py`).

    x'     = PGD on CE(S(x'), y) from x + 0.001·N(0, 1)            (the student is attacked)
    L_adv  = KL(p_Tadv(x') || p_S(x'))                              (robust teacher on the adversarial input)
    L_nat  = KL(p_Tnat(x)  || p_S(x))                               (natural teacher on the clean input)
    L      = w_adv · L_adv + w_nat · L_nat

Adaptive normalisation of the weights, before each step's loss (all detached, no host sync):

    L^0    = the losses of the first training step (kept)
    r      = (L / L^0) ^ rate_exponent                              (relative loss: 1 = no progress)
    w_nat ← w_nat − weight_lr · (w_nat − r_nat / (r_adv + r_nat)),   w_adv = 1 − w_nat
    w_adv = w_nat = 1/2 at the start, weight_lr = 0.025, rate_exponent = 1

Each weight moves toward its branch's share of the relative losses: the branch whose loss falls
more slowly (larger `r`) gains weight. `weight_lr` is multiplied by `weight_lr_decay` at each epoch in
`weight_lr_milestones`. The weights and the initial losses are buffers (saved in checkpoints); under
data-parallel training the two losses are averaged over the processes before the update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.attacks import kl_div
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method
from robustdistill.runtime import distributed as dist

_TINY = 1e-12


@dataclass(frozen=True)
class MTARDOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    weight_lr: float = option(0.025, ge=0, le=1, help="step of the adaptive weights toward their targets")
    rate_exponent: float = option(1.0, gt=0, help="exponent of the relative losses L / L^0")
    init_weight_adv: float = option(0.5, ge=0, le=1, help="w_adv at the start (w_nat = 1 - w_adv)")
    weight_lr_milestones: tuple[int, ...] = option((), ge=0, help="epochs at which weight_lr is multiplied by decay")
    weight_lr_decay: float = option(0.1, ge=0, le=1, help="factor applied to weight_lr at each milestone")

    def check(self) -> None:
        self._set("weight_lr_milestones", tuple(sorted(self.weight_lr_milestones)))


@register_method("mtard", role="distillation", needs_teacher=True, needs_natural_teacher=True)
class MTARD(Method[MTARDOptions]):
    """Distil a robust teacher on adversarial inputs and a natural teacher on clean inputs, with weights
    that follow the two losses' relative progress."""

    weight_adv: Tensor
    weight_nat: Tensor
    init_loss_adv: Tensor
    init_loss_nat: Tensor

    def __init__(self, options: MTARDOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)
        self.register_buffer("weight_adv", torch.tensor(options.init_weight_adv))
        self.register_buffer("weight_nat", torch.tensor(1.0 - options.init_weight_adv))
        # NaN = not seen yet: the first training step records its losses here.
        self.register_buffer("init_loss_adv", torch.tensor(float("nan")))
        self.register_buffer("init_loss_nat", torch.tensor(float("nan")))

    def current_weight_lr(self) -> float:
        """`weight_lr`, decayed once for each milestone the current epoch has reached."""
        reached = sum(self.epoch >= milestone for milestone in self.options.weight_lr_milestones)
        return self.options.weight_lr * self.options.weight_lr_decay**reached

    @torch.no_grad()
    def update_weights(self, loss_adv: Tensor, loss_nat: Tensor) -> None:
        """One step of the adaptive normalisation from this step's (detached) losses."""
        # every process moves the weights by the losses of the global batch: the weights stay equal
        losses = dist.mean_over_ranks(torch.stack([loss_adv.detach().float(), loss_nat.detach().float()]))
        loss_adv, loss_nat = losses.unbind()
        self.init_loss_adv.copy_(torch.where(torch.isnan(self.init_loss_adv), loss_adv, self.init_loss_adv))
        self.init_loss_nat.copy_(torch.where(torch.isnan(self.init_loss_nat), loss_nat, self.init_loss_nat))
        rate_adv = (loss_adv / self.init_loss_adv.clamp_min(_TINY)).pow(self.options.rate_exponent)
        rate_nat = (loss_nat / self.init_loss_nat.clamp_min(_TINY)).pow(self.options.rate_exponent)
        total = rate_adv + rate_nat
        target_nat = torch.where(total > 0, rate_nat / total.clamp_min(_TINY), self.weight_nat)
        weight_nat = self.weight_nat - self.current_weight_lr() * (self.weight_nat - target_nat)
        self.weight_nat.copy_(weight_nat.clamp(0.0, 1.0))
        self.weight_adv.copy_(1.0 - self.weight_nat)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        x_adv = self.attack.perturb(student, x, y, index, loss="ce", random_start="normal")
        with torch.no_grad():
            teacher_adv = self.teacher(x_adv)
            natural_clean = self.natural_teacher(x)
        logits_adv = student(x_adv)
        logits_clean = student(x)
        kl_adv = kl_div(teacher_adv, logits_adv).mean()
        kl_nat = kl_div(natural_clean, logits_clean).mean()
        if self.training:
            self.update_weights(kl_adv, kl_nat)
        # clones: the buffers change in place at the next step, the graph must keep this step's values
        weight_adv, weight_nat = self.weight_adv.clone(), self.weight_nat.clone()
        loss = weight_adv * kl_adv + weight_nat * kl_nat
        return {
            "loss": loss,
            "kl_adv": kl_adv.detach(),
            "kl_nat": kl_nat.detach(),
            "weight_adv": weight_adv,
            "weight_nat": weight_nat,
            "acc_adv": accuracy(logits_adv, y),
            "acc_clean": accuracy(logits_clean, y),
        }

    def diagnostics(self) -> dict[str, float]:
        return {"mtard_weight_adv": float(self.weight_adv), "mtard_weight_nat": float(self.weight_nat)}
