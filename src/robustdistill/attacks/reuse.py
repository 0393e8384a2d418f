"""Perturbation reuse across epochs: each training sample's last perturbation, keyed by its dataset index.

    after each attack on sample i:      delta_i <- x'_i - x_i
    the next time i is attacked:        x'_i = PGD_{reuse_steps}(start = Proj(x_i + delta_i))

The warm start of "free" adversarial training (Shafahi et al., NeurIPS 2019) and ATTA (Zheng et al.,
"Efficient Adversarial Training with Transferable Adversarial Examples", CVPR 2020): the perturbation
found in one epoch is a good start for the next, so fewer steps reach a strong example. A perturbation
found for one augmented view is reused as is on the next epoch's differently augmented view (ATTA
re-applies the augmentation to it; we do not: `docs/attacks.md`). The start is projected onto the
eps-ball around the new clean image and into [0, 1].

The bank is the extra state of a module, so it travels with a method's `state_dict` into the
checkpoint: a resumed run attacks from exactly the perturbations the interrupted one stored. Under DDP
every rank stores the slots of every rank's batch (one all-gather per step), because the loader
deals each sample to a different rank every epoch; the banks stay identical on all ranks and rank 0's
checkpoint holds all of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.attacks.pgd import initial_point
from robustdistill.attacks.threat import ThreatModel
from robustdistill.errors import ConfigError

__all__ = ["PerturbationBank"]


class PerturbationBank(nn.Module):
    """`num_samples` slots of one perturbation each (float32, shaped like a sample), empty until stored."""

    def __init__(self, num_samples: int) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ConfigError(
                f"a perturbation bank needs num_samples >= 1 (the training-set size), got {num_samples!r}"
            )
        self.num_samples = num_samples
        self.delta: Tensor | None = None  # (N, ...) allocated on the first store, on the batch's device
        self.seen = torch.zeros(num_samples, dtype=torch.bool)

    def _check(self, index: Tensor) -> Tensor:
        index = index.long()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.num_samples):
            raise ConfigError(
                f"sample index out of range for a perturbation bank of {self.num_samples} slots "
                f"(got {int(index.min())}..{int(index.max())}): num_samples must be the training-set size"
            )
        return index

    def _on(self, device: torch.device) -> None:
        if self.seen.device != device:
            self.seen = self.seen.to(device)
        if self.delta is not None and self.delta.device != device:
            self.delta = self.delta.to(device)

    def start(
        self,
        x: Tensor,
        index: Tensor,
        *,
        eps: float | Tensor,
        threat: ThreatModel,
        random_start: bool | str | None,
    ) -> tuple[Tensor | None, bool]:
        """The attack's start for `x` and whether every sample had a stored perturbation.

        `(None, False)` when none had (the attack draws its own random start); otherwise `x + delta_i`
        where stored and the attack's usual start `random_start` elsewhere, projected onto the ball
        and into [0, 1].
        """
        index = self._check(index).to(x.device)
        self._on(x.device)
        if self.delta is None:
            return None, False
        seen = self.seen[index]
        every, some = bool(seen.all()), bool(seen.any())
        if not some:
            return None, False
        x32 = x.detach().float()
        stored = threat.project(x32 + self.delta[index], x32, eps)
        if every:
            return stored, True
        fresh = initial_point(x32, eps, norm=threat, random_start=random_start)
        return torch.where(seen.view(-1, *([1] * (x32.dim() - 1))), stored, fresh), False

    def store(self, x: Tensor, x_adv: Tensor, index: Tensor) -> None:
        """Keep `x_adv - x` in the slots `index` (every rank's batch under DDP; first occurrence of a repeat)."""
        from robustdistill.runtime import distributed as dist

        index = self._check(index).to(x.device)
        delta = x_adv.detach().float() - x.detach().float()
        index, delta = dist.cat_over_ranks(index, delta)
        unique, inverse = torch.unique(index, return_inverse=True)
        positions = torch.arange(index.numel(), device=index.device)
        first = torch.full_like(unique, index.numel()).scatter_reduce(0, inverse, positions, "amin")
        self._on(delta.device)
        if self.delta is None:
            self.delta = torch.zeros((self.num_samples, *delta.shape[1:]), dtype=torch.float32, device=delta.device)
        if self.delta.shape[1:] != delta.shape[1:]:
            raise ConfigError(
                f"the perturbation bank holds samples of shape {tuple(self.delta.shape[1:])}, "
                f"got a batch of {tuple(delta.shape[1:])}"
            )
        self.delta.index_copy_(0, index[first], delta[first])
        self.seen[index[first]] = True

    def get_extra_state(self) -> dict[str, Any]:
        return {"delta": self.delta, "seen": self.seen}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        seen = state["seen"]
        if seen.shape != (self.num_samples,):
            raise ConfigError(
                f"the checkpoint's perturbation bank has {seen.shape[0]} slots, this run {self.num_samples}: "
                "resume with the same training set"
            )
        self.seen = seen.clone()
        self.delta = None if state["delta"] is None else state["delta"].clone()

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, stored={int(self.seen.sum())}"
