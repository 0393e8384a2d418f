"""The logged loss terms of an epoch, and the checks that no NaN or Inf reaches a checkpoint."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.errors import TrainingError


class TermAccumulator:
    """Sums of the logged loss terms kept on the device; read (one sync) only when logging."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.first_bad: dict[str, Tensor] = {}

    def add(self, terms: dict[str, Tensor], step: int) -> None:
        """Add one step's terms; remember (on the device) the first `step` whose loss was not finite."""
        for key, value in terms.items():
            value = value.detach().float()
            if key in self.sums:
                self.sums[key] += value
            else:
                self.sums[key] = value.clone()
        self.count += 1
        loss = terms["loss"].detach()
        bad = ~torch.isfinite(loss)
        marker = torch.where(bad, torch.tensor(step, device=loss.device), torch.tensor(-1, device=loss.device))
        if "loss" in self.first_bad:
            previous = self.first_bad["loss"]
            self.first_bad["loss"] = torch.where(previous >= 0, previous, marker)
        else:
            self.first_bad["loss"] = marker

    def means(self) -> dict[str, float]:
        """`sum / count` of every term since the epoch began (or since the checkpoint it resumed from)."""
        if not self.count:
            return {}
        keys = list(self.sums)
        values = (torch.stack([self.sums[k] for k in keys]) / self.count).tolist()
        return dict(zip(keys, values, strict=True))

    def check_finite(self, terms_seen: dict[str, Tensor]) -> None:
        """Raise TrainingError naming the first non-finite step and the non-finite terms of `terms_seen`."""
        if "loss" not in self.first_bad:
            return
        step = int(self.first_bad["loss"])
        if step >= 0:
            names = [k for k, v in terms_seen.items() if not torch.isfinite(v.detach()).all()]
            which = ", ".join(names) or "loss"
            raise TrainingError(
                f"non-finite loss at step {step} (terms: {which}); lower the learning rate or check the data. "
                "The last good checkpoint is kept."
            )

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load(self, state: dict[str, Any]) -> None:
        self.sums = dict(state["sums"])
        self.count = int(state["count"])


def check_finite_weights(modules: dict[str, nn.Module], step: int) -> None:
    """Refuse weights (parameters and buffers) holding NaN or Inf: they are never checkpointed nor saved."""
    for role, module in modules.items():
        floats = [(name, t) for name, t in module.state_dict().items() if t.is_floating_point() and t.numel()]
        if not floats or bool(torch.stack([torch.isfinite(t).all() for _, t in floats]).all()):
            continue
        name = next(name for name, t in floats if not bool(torch.isfinite(t).all()))
        raise TrainingError(
            f"the {role}'s tensor '{name}' became non-finite (NaN or Inf) by step {step}; lower the learning "
            "rate or check the data. The last good checkpoint is kept."
        )
