"""Stochastic weight averaging of the student (Izmailov et al., "Averaging Weights Leads to Wider
Optima and Better Generalization", UAI 2018), as the official SAAD code uses it (HongsinLee/saad).

`theta_swa = (1 / n) * sum_k theta_k` over the weights at the end of every epoch from `start`
(1-based) on, kept as a running mean by `torch.optim.swa_utils.AveragedModel`. BatchNorm statistics
are not averaged: `refresh_batch_norm` recomputes them on the training images with the averaged
weights (`torch.optim.swa_utils.update_bn`: a plain average over the batches of one pass).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn

from robustdistill.data import ArrayDataset, Loader


class SWA:
    """The running average of the student's weights at the ends of epochs `start`, `start + 1`, ..."""

    def __init__(self, model: nn.Module, start: int) -> None:
        self.start = start
        self.averaged = AveragedModel(model)
        self.averaged.requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        """The averaged model itself (a copy of the student's architecture), in eval mode."""
        return self.averaged.module.eval()

    @property
    def count(self) -> int:
        """How many epochs' weights are in the average."""
        return int(self.averaged.n_averaged)

    def averages(self, epoch: int) -> bool:
        """Whether the weights at the end of (0-based) `epoch` enter the average."""
        return epoch + 1 >= self.start

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def refresh_batch_norm(self, data: ArrayDataset, batch_size: int, device: torch.device) -> None:
        """Recompute the BatchNorm statistics of the average on `data` (in order, not augmented).

        The random generators are left as they were (dropout draws in the pass do not shift training).
        """
        loader = Loader(data, batch_size, shuffle=False, drop_last=False, device=str(device))
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            update_bn(loader.iterate(), self.averaged.module)
        self.averaged.module.eval()

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)
