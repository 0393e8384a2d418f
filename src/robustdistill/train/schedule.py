"""Learning-rate schedules as per-step multipliers (piecewise constant, cosine, linear warm-up)."""

from __future__ import annotations

import math

import torch


def lr_factor(
    step: int,
    *,
    steps_per_epoch: int,
    epochs: int,
    schedule: str,
    milestones: list[int],
    gamma: float,
    warmup_epochs: int = 0,
) -> float:
    """Multiplier of the base learning rate at optimisation step `step` (0-based)."""
    epoch_float = step / steps_per_epoch
    if warmup_epochs and epoch_float < warmup_epochs:
        return (step + 1) / (warmup_epochs * steps_per_epoch)
    if schedule == "constant":
        return 1.0
    if schedule == "piecewise":
        epoch = step // steps_per_epoch
        return gamma ** sum(epoch >= m for m in milestones)
    if schedule == "cosine":
        total = max(1, (epochs - warmup_epochs) * steps_per_epoch)
        progress = min(1.0, (step - warmup_epochs * steps_per_epoch) / total)
        return 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule '{schedule}'")


def make_scheduler(optimizer: torch.optim.Optimizer, **kwargs: object) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR following `lr_factor`; its state is saved with the checkpoint."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **kwargs))  # type: ignore[arg-type]
