"""Contrastive estimators of the mutual information between teacher and student embeddings.

Building blocks of `gacd` (and of any feature-contrastive method), written after the
description of CRD (Tian, Krishnan and Isola, "Contrastive Representation Distillation",
ICLR 2020) and its public code (HobbitLong/RepDistiller, `crd/`), not copied from it.

- `EmbedHead`: Linear -> `feat_dim` -> L2 normalisation (one per network).
- `nce_loss_from_scores`: CRD's binary NCE loss, from the dot products `s = u.v`, with the critic
  `h(u, v) = e^{u.v/tau} / (e^{u.v/tau} + Z K / N)`, written in log space as
  `h = sigmoid(u.v/tau - log(Z K / N))`; per sample
  `l = -[log h(u, v+) + sum_k log(1 - h(u, v-_k))]`.
- `infonce_loss`: in-batch InfoNCE, `l_i = -log softmax_j(u_i.v_j / tau)[i]`.
- `estimate_log_z`: CRD's normalisation constant `Z = N * mean(e^{s/tau})`, in log space.
- `MemoryBank`: one slot per training sample for the teacher and student embeddings, uniform
  negative sampling and the momentum update `bank[i] = normalise(m bank[i] + (1 - m) z_i)`.
- `BankNegatives`: one batch's negatives in one bank, scored against anchors (`s_bk = bank[n_bk].a_b`).

All losses are per sample, shape `(B,)`, so that a caller can reweight samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.runtime import distributed as dist

__all__ = [
    "BankNegatives",
    "EmbedHead",
    "MemoryBank",
    "estimate_log_z",
    "infonce_loss",
    "nce_loss_from_scores",
]


def _full_precision(reference: Tensor) -> torch.autocast:
    """Switch autocast off: dot products divided by a temperature of 0.07 need float32."""
    return torch.autocast(device_type=reference.device.type, enabled=False)


class EmbedHead(nn.Module):
    """`z = normalise(W f + b)`: a linear projection to `out_dim` followed by L2 normalisation.

    The projection runs in float32 (also under autocast) so that the dot products that the
    estimators divide by a small temperature keep their precision.
    """

    def __init__(self, in_dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, features: Tensor) -> Tensor:
        with _full_precision(features):
            return F.normalize(self.linear(features.flatten(1).float()), dim=1)


def nce_loss_from_scores(
    positive: Tensor,
    negatives: Tensor,
    *,
    temperature: float,
    num_samples: int,
    log_z: float | Tensor = 0.0,
) -> Tensor:
    """Per-sample NCE loss from dot products: `positive` (B,) and `negatives` (B, K).

    With `a = s / tau - log(Z K / N)` the critic is `h = sigmoid(a)`, and
    `l = -log sigmoid(a_pos) - sum_k log sigmoid(-a_neg_k)` (= `-log h_pos - sum log(1 - h_neg)`).
    """
    k = negatives.shape[1]
    offset = torch.as_tensor(log_z, dtype=torch.float32, device=positive.device) + math.log(k / num_samples)
    a_pos = positive.float() / temperature - offset
    a_neg = negatives.float() / temperature - offset.unsqueeze(-1)
    return -F.logsigmoid(a_pos) - F.logsigmoid(-a_neg).sum(dim=1)


def estimate_log_z(positive: Tensor, negatives: Tensor, *, temperature: float, num_samples: int) -> Tensor:
    """`log Z` with CRD's estimate `Z = N * mean(e^{s/tau})` over the batch's K+1 scores per anchor (detached)."""
    scores = torch.cat([positive.detach().float().unsqueeze(1), negatives.detach().float()], dim=1) / temperature
    return torch.logsumexp(scores.flatten(), dim=0) - math.log(scores.numel()) + math.log(num_samples)


def infonce_loss(anchor: Tensor, candidates: Tensor, *, temperature: float) -> Tensor:
    """In-batch InfoNCE, per anchor: `l_i = -log( e^{u_i.v_i/tau} / sum_j e^{u_i.v_j/tau} )`, shape (B,).

    `anchor` (B, d) and `candidates` (B, d): `candidates[i]` is the positive of `anchor[i]` and the
    other rows are its negatives.
    """
    with _full_precision(anchor):
        logits = anchor.float() @ candidates.float().t() / temperature
    target = torch.arange(anchor.shape[0], device=anchor.device)
    return F.cross_entropy(logits, target, reduction="none")


# `auto` scores densely up to N = 32 K: on one CPU thread (N = 55 000, K = 4 096, B = 128, d = 128)
# a dense score's forward and backward took 92 ms against 155 ms for the gathered rows, whose
# gather took another 356 ms per bank against 13 ms for the copy.
DENSE_RATIO = 32


@dataclass(frozen=True)
class BankNegatives:
    """One batch's K negatives per anchor in a memory bank: the slots (B, K) and a copy of their rows.

    `scores(anchor)` is `s_bk = bank[slots_bk] . anchor_b`, (B, K), differentiable in the anchor. Two
    equal ways (up to float rounding) to hold the rows: `rows`, the gathered (B, K, d) rows, scored
    with a batched dot product (B·K·d multiply-adds, bound by memory traffic); or `matrix`, a copy of
    the whole (N, d) bank, scored as `(anchor @ matrix.T)` read at the slots (B·N·d multiply-adds in
    one matrix product, bound by arithmetic, so faster while N is a few dozen K). Both are copies:
    the bank's in-place update after the loss does not touch the autograd graph.
    """

    slots: Tensor
    rows: Tensor | None = None
    matrix: Tensor | None = None

    def scores(self, anchor: Tensor) -> Tensor:
        """`(B, K)` dot products of each anchor `anchor[b]` (B, d) with its K negatives, in float32."""
        with _full_precision(anchor):
            anchor = anchor.float()
            if self.matrix is not None:
                return (anchor @ self.matrix.t()).gather(1, self.slots)
            assert self.rows is not None
            return torch.einsum("bkd,bd->bk", self.rows, anchor)


class MemoryBank(nn.Module):
    """CRD-style memory: `num_samples` slots of `dim`-d unit vectors for the teacher and the student.

    Buffers (saved with the method): `teacher` and `student` `(N, dim)`, initialised uniformly in
    `[-1/sqrt(dim/3), 1/sqrt(dim/3)]` per coordinate (as CRD) and then L2-normalised; `log_z` `(2,)`,
    the NCE normalisation constants of the teacher-anchored and student-anchored directions, NaN
    until estimated from the first batch.
    """

    def __init__(self, num_samples: int, dim: int, momentum: float = 0.5) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
            raise ConfigError(f"a memory bank needs num_samples >= 2 (the training-set size), got {num_samples!r}")
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"option 'momentum' must be in [0, 1), got {momentum}")
        self.num_samples = num_samples
        self.dim = dim
        self.momentum = float(momentum)
        bound = 1.0 / math.sqrt(dim / 3)
        for name in ("teacher", "student"):
            init = torch.rand(num_samples, dim).mul_(2 * bound).sub_(bound)
            self.register_buffer(name, F.normalize(init, dim=1))
        self.register_buffer("log_z", torch.full((2,), float("nan")))

    teacher: Tensor
    student: Tensor
    log_z: Tensor

    def sample_negatives(self, index: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """`(B, k)` slot indices drawn uniformly (with replacement) from the N - 1 slots other than each `index`."""
        index = index.to(self.teacher.device).long()
        draw = torch.randint(0, self.num_samples - 1, (index.shape[0], k), device=index.device, generator=generator)
        return draw + (draw >= index.unsqueeze(1)).long()

    @torch.no_grad()
    def update(self, index: Tensor, z_teacher: Tensor, z_student: Tensor) -> None:
        """`bank[i] = normalise(m * bank[i] + (1 - m) * z_i)` for the batch's slots only (no autograd).

        Under DDP every rank applies the slots of every rank's batch (one all-gather), so the banks
        stay identical across ranks and the checkpoint rank 0 writes holds the whole bank.
        """
        index, z_teacher, z_student = dist.cat_over_ranks(index.to(self.teacher.device).long(), z_teacher, z_student)
        m = self.momentum
        for bank, z in ((self.teacher, z_teacher), (self.student, z_student)):
            mixed = bank.index_select(0, index).mul(m).add_(z.detach().to(bank.dtype), alpha=1.0 - m)
            bank.index_copy_(0, index, F.normalize(mixed, dim=1))

    @torch.no_grad()
    def set_log_z(self, estimate: Tensor) -> None:
        """Fix each normalisation constant that is still unset (NaN) to `estimate` (2,); no host sync.

        Under DDP the estimate is first averaged over ranks, so every rank fixes the same constants.
        """
        estimate = dist.mean_over_ranks(estimate.detach().to(self.log_z))
        self.log_z.copy_(torch.where(torch.isnan(self.log_z), estimate, self.log_z))

    def resolved_log_z(self, estimate: Tensor) -> Tensor:
        """The stored constants, with `estimate` standing in for those not set yet."""
        return torch.where(torch.isnan(self.log_z), estimate.to(self.log_z), self.log_z)

    def negatives(
        self, slots: Tensor, bank: Literal["teacher", "student"], scoring: Literal["auto", "rows", "dense"] = "auto"
    ) -> BankNegatives:
        """The batch's negatives `slots` (B, K) in `bank`, as a snapshot that later updates leave alone.

        `scoring`: `rows` gathers the B·K rows; `dense` keeps a copy of the whole bank and scores all N
        slots with one matrix product; `auto` picks `dense` when N <= DENSE_RATIO · K.
        """
        matrix = getattr(self, bank)
        if scoring == "auto":
            scoring = "dense" if self.num_samples <= DENSE_RATIO * slots.shape[1] else "rows"
        if scoring == "dense":
            return BankNegatives(slots, matrix=matrix.clone())
        if scoring == "rows":
            return BankNegatives(slots, rows=matrix.index_select(0, slots.reshape(-1)).view(*slots.shape, self.dim))
        raise ConfigError(f"scoring must be 'auto', 'rows' or 'dense', got {scoring!r}")

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, dim={self.dim}, momentum={self.momentum}"
