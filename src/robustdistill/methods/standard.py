"""Standard (non-robust) training: `CE(M(x), y)`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.registry import register_method


@register_method("standard", aliases=("natural", "ce"), role="objective")
class Standard(Method):
    """Plain empirical risk minimisation on clean inputs; no inner maximisation."""

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        logits = student(x)
        loss = F.cross_entropy(logits, y)
        return {"loss": loss, "ce": loss.detach(), "acc_clean": accuracy(logits, y)}
