"""Per-epoch diagnostics of `paths`: mean weight and KL per branch and aligned step, teacher error, target success.

Sums are plain tensors on the training device (no host sync per step, not buffers: a run resumed
mid-epoch restarts the averages); `report` turns them into floats once per epoch. Keys in
`docs/methods/paths.md`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["PathDiagnostics"]


class PathDiagnostics:
    """Running sums over the batches of an epoch, for the branches `branch_names` and the steps `used_steps`."""

    def __init__(self, branch_names: tuple[str, ...], used_steps: tuple[int, ...], steps: int) -> None:
        self.branch_names = branch_names
        self.used_steps = used_steps
        self.key_width = max(2, len(str(steps)))
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.samples = 0

    @torch.no_grad()
    def add(
        self,
        kl_path: Tensor,
        weights: Tensor,
        teacher_points: Tensor,
        y_columns: Tensor,
        last_pred: Tensor,
        targets: Tensor | None,
        batch: int,
        steps: tuple[int, ...],
    ) -> None:
        """One batch: `kl_path` and `weights` (m, n·B) over its aligned `steps`, the teacher's logits at the points."""
        n_steps, width = kl_path.shape
        n_branches = width // batch
        per_branch = (n_steps, n_branches, batch)
        wrong = (teacher_points.argmax(dim=1) != y_columns.repeat(n_steps)).float().view(per_branch)
        slots = torch.tensor([self.used_steps.index(k) for k in steps], device=kl_path.device)
        n_slots = len(self.used_steps)
        zeros = torch.zeros(n_branches, n_slots, device=kl_path.device)
        update = {  # sums per (branch, aligned step) and the samples each step was aligned on
            "weight": zeros.index_add(1, slots, weights.view(per_branch).sum(dim=2).T),
            "kl": zeros.index_add(1, slots, kl_path.detach().float().view(per_branch).sum(dim=2).T),
            "step_samples": torch.zeros(n_slots, device=kl_path.device).index_add(
                0, slots, torch.full((n_steps,), float(batch), device=kl_path.device)
            ),
            "teacher_error": wrong.sum(dim=(0, 2)),  # (branches,)
        }
        if targets is not None:
            update["target_success"] = (last_pred[-batch:] == targets).float().sum()
        for key, value in update.items():
            self.sums[key] = self.sums[key].to(value.device) + value if key in self.sums else value.clone()
        self.samples += batch

    def report(self) -> dict[str, float]:
        """The means since the last report (then reset); empty when no batch was added."""
        if self.samples == 0:
            return {}
        values: dict[str, Any] = {key: value.detach().double().cpu().tolist() for key, value in self.sums.items()}
        counts = values["step_samples"]
        out: dict[str, float] = {}
        for b, name in enumerate(self.branch_names):
            for s, k in enumerate(self.used_steps):
                if counts[s]:
                    step = f"step_{k:0{self.key_width}d}"
                    out[f"paths/weight_{name}/{step}"] = float(values["weight"][b][s]) / counts[s]
                    out[f"paths/kl_{name}/{step}"] = float(values["kl"][b][s]) / counts[s]
            out[f"paths/teacher_error_{name}"] = float(values["teacher_error"][b]) / sum(counts)
        if "target_success" in values:
            out["paths/target_success"] = float(values["target_success"]) / self.samples
        self.reset()
        return out
