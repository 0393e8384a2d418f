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

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.methods.base import AttackSettings, Method, accuracy, check_positive, kl_batchmean
from robustdistill.methods.kd import check_count, check_fraction
from robustdistill.methods.registry import register_method
from robustdistill.runtime import distributed as dist

_TINY = 1e-12


@register_method("mtard")
class MTARD(Method):
    """Distil a robust teacher on adversarial inputs and a natural teacher on clean inputs, with weights
    that follow the two losses' relative progress."""

    needs_teacher = True
    needs_natural_teacher = True

    weight_adv: Tensor
    weight_nat: Tensor
    init_loss_adv: Tensor
    init_loss_nat: Tensor

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        natural_teacher: nn.Module | None = None,
        weight_lr: float = 0.025,
        rate_exponent: float = 1.0,
        init_weight_adv: float = 0.5,
        weight_lr_milestones: Sequence[int] = (),
        weight_lr_decay: float = 0.1,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(teacher=teacher, natural_teacher=natural_teacher)
        self.weight_lr = check_fraction("weight_lr", weight_lr)
        self.rate_exponent = check_positive("rate_exponent", rate_exponent)
        self.init_weight_adv = check_fraction("init_weight_adv", init_weight_adv)
        if isinstance(weight_lr_milestones, (str, bytes)) or not isinstance(weight_lr_milestones, Sequence):
            raise ConfigError(f"option 'weight_lr_milestones' must be a list of epochs, got {weight_lr_milestones!r}")
        self.weight_lr_milestones = tuple(sorted(check_count("weight_lr_milestones", m) for m in weight_lr_milestones))
        self.weight_lr_decay = check_fraction("weight_lr_decay", weight_lr_decay)
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )
        self.register_buffer("weight_adv", torch.tensor(self.init_weight_adv))
        self.register_buffer("weight_nat", torch.tensor(1.0 - self.init_weight_adv))
        # NaN = not seen yet: the first training step records its losses here.
        self.register_buffer("init_loss_adv", torch.tensor(float("nan")))
        self.register_buffer("init_loss_nat", torch.tensor(float("nan")))

    def current_weight_lr(self) -> float:
        """`weight_lr`, decayed once for each milestone the current epoch has reached."""
        reached = sum(self.epoch >= milestone for milestone in self.weight_lr_milestones)
        return self.weight_lr * self.weight_lr_decay**reached

    @torch.no_grad()
    def update_weights(self, loss_adv: Tensor, loss_nat: Tensor) -> None:
        """One step of the adaptive normalisation from this step's (detached) losses."""
        # every process moves the weights by the losses of the global batch: the weights stay equal
        losses = dist.mean_over_ranks(torch.stack([loss_adv.detach().float(), loss_nat.detach().float()]))
        loss_adv, loss_nat = losses.unbind()
        self.init_loss_adv.copy_(torch.where(torch.isnan(self.init_loss_adv), loss_adv, self.init_loss_adv))
        self.init_loss_nat.copy_(torch.where(torch.isnan(self.init_loss_nat), loss_nat, self.init_loss_nat))
        rate_adv = (loss_adv / self.init_loss_adv.clamp_min(_TINY)).pow(self.rate_exponent)
        rate_nat = (loss_nat / self.init_loss_nat.clamp_min(_TINY)).pow(self.rate_exponent)
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
        kl_adv = kl_batchmean(teacher_adv, logits_adv)
        kl_nat = kl_batchmean(natural_clean, logits_clean)
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

    def options(self) -> dict[str, Any]:
        return {
            "weight_lr": self.weight_lr,
            "rate_exponent": self.rate_exponent,
            "init_weight_adv": self.init_weight_adv,
            "weight_lr_milestones": list(self.weight_lr_milestones),
            "weight_lr_decay": self.weight_lr_decay,
            **self.attack.as_dict(),
        }
