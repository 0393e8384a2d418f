"""The two adversarial branches of `paths`: target choice, the per-sample objective of the joint batch,
and the check that lets the attack's forward passes double as the alignment's (`share_forward`).

    t_i ≠ y_i                                      random | teacher-runner-up | least-likely
    rows [u; v] of one 2B batch, labels [y; t]:    objective L_u(u, y) on u, −CE(S(v), t) on v (PGD ascends both)
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import InnerLoss, kl_div
from robustdistill.errors import ConfigError

__all__ = ["BRANCHES", "INNER_LOSSES", "TARGETS", "DualBranchLoss", "choose_targets", "train_mode_dependent"]

INNER_LOSSES = ("ce", "kl-clean", "kl-moving")
TARGETS = ("random", "teacher-runner-up", "least-likely")
BRANCHES = ("both", "untargeted", "targeted")


def choose_targets(rule: str, teacher_logits: Tensor, y: Tensor) -> Tensor:
    """One target class `t_i ≠ y_i` per sample, shape (B,).

    random: uniform over the C − 1 other classes; teacher-runner-up: the teacher's most probable class
    other than y on the clean input; least-likely: the teacher's least probable class (never y).
    """
    num_classes = teacher_logits.shape[1]
    if num_classes < 2:
        raise ConfigError("the targeted branch needs at least two classes")
    if rule == "random":
        offset = torch.randint(1, num_classes, y.shape, device=y.device)
        return (y + offset) % num_classes
    logits = teacher_logits.detach().float()
    true_class = F.one_hot(y, num_classes).bool()
    if rule == "teacher-runner-up":
        return logits.masked_fill(true_class, float("-inf")).argmax(dim=1)
    if rule == "least-likely":
        return logits.masked_fill(true_class, float("inf")).argmin(dim=1)
    raise ConfigError(f"option 'target' must be one of {', '.join(TARGETS)}; got '{rule}'")


#: layers whose output depends on `training`: Dropout masks, BatchNorm batch statistics, tracked InstanceNorm
_TRAIN_MODE_LAYERS = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def train_mode_dependent(model: nn.Module) -> list[str]:
    """Names of the sub-modules whose output differs between train and eval mode (empty: none).

    Dropout with p > 0 (a random mask in train mode), BatchNorm (batch statistics in train mode,
    running ones in eval mode) and InstanceNorm with `track_running_stats`. A custom layer that reads
    `self.training` (such as a functional dropout) is not detected.
    """
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats:
            continue
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p == 0:
            continue
        if isinstance(module, _TRAIN_MODE_LAYERS):
            found.append(f"{name or type(model).__name__} ({type(module).__name__})")
    return found


class DualBranchLoss(InnerLoss):
    """The per-sample objective of both branches on one batch `[untargeted rows; targeted rows]`.

    Untargeted rows (the first `n_untargeted`): `L_u` with labels `y` (ce: `CE(S(u), y)`; kl-clean:
    `KL(p_T(x) ‖ p_S(u))`; kl-moving: `KL(p_T(u) ‖ p_S(u))`, the input gradient flowing through the
    teacher as in `attacks.KLToModel`'s default). Targeted rows: `−CE(S(v), t)` with labels `t`, so
    that PGD, ascending the objective, descends CE toward `t`. One student forward serves both.

    The student's logits at the forwards numbered in `keep` (0: the start `z_0`, k: the iterate `z_k`)
    are kept, with their graph, in `kept` (`share_forward`: the attack's forward is the alignment's).
    """

    name: ClassVar[str] = "paths-dual-branch"

    def __init__(
        self,
        inner_loss: str,
        n_untargeted: int,
        n_targeted: int,
        *,
        device: torch.device,
        teacher: nn.Module | None = None,
        teacher_clean_logits: Tensor | None = None,
        keep: tuple[int, ...] = (),
    ) -> None:
        self.inner_loss = inner_loss
        self.n_untargeted = int(n_untargeted)
        self.sign = torch.cat([torch.ones(n_untargeted, device=device), -torch.ones(n_targeted, device=device)])
        self.teacher = teacher
        self.teacher_clean_logits = None if teacher_clean_logits is None else teacher_clean_logits.detach()
        self.keep = keep
        self.kept: dict[int, Tensor] = {}
        self._forwards = 0

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        logits = model(x_adv)
        if self._forwards in self.keep:
            self.kept[self._forwards] = logits
        self._forwards += 1
        return self.of_logits(logits.float(), x_adv, labels) * self.sign

    def of_logits(self, logits: Tensor, x_adv: Tensor, labels: Tensor) -> Tensor:
        """The per-sample loss of each row, before the branch's sign, from the student's logits (float32)."""
        values = F.cross_entropy(logits, labels, reduction="none")
        n = self.n_untargeted
        if n == 0 or self.inner_loss == "ce":
            return values
        if self.inner_loss == "kl-clean":
            assert self.teacher_clean_logits is not None
            untargeted = kl_div(self.teacher_clean_logits, logits[:n])
        else:
            assert self.teacher is not None
            untargeted = kl_div(self.teacher(x_adv[:n]), logits[:n])
        return torch.cat([untargeted, values[n:]])

    @property
    def extra_models(self) -> tuple[nn.Module, ...]:
        return (self.teacher,) if self.inner_loss == "kl-moving" and self.teacher is not None else ()
