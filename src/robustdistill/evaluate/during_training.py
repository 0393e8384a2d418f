"""The quick evaluation a training run does at the end of an epoch (`fit`'s `evaluation` callback)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from robustdistill.data import ArrayDataset, subset
from robustdistill.evaluate.suite import attack_suite, parse_attacks
from robustdistill.runtime import distributed as dist


@dataclass(frozen=True)
class EpochEvaluation:
    """Accuracy under `attacks` on a fixed class-balanced subset of `n` images of `data`; the training RNG
    is left untouched.

    Under DDP the subset is split into contiguous shards, one per rank, and the accuracies are
    reduced over ranks (weighted by shard size): the same examples as one process, `world` times faster.
    """

    data: ArrayDataset
    attacks: tuple[str, ...]
    eps: float
    n: int
    batch_size: int
    seed: int

    @property
    def label(self) -> str:
        """`N <split> images (attack, ...)`, for the progress line."""
        return f"{min(self.n, len(self.data))} {self.data.split} images ({', '.join(self.attacks)})"

    def __call__(self, model: nn.Module) -> dict[str, float]:
        """`{"eval_<attack>": accuracy}` for every attack and `worst_case` (NaN accuracies left out)."""
        chosen = subset(self.data, self.n, seed=self.seed) if self.n < len(self.data) else self.data
        rank, world = dist.rank(), dist.world_size()
        shard = chosen
        if world > 1:
            keep = slice(len(chosen) * rank // world, len(chosen) * (rank + 1) // world)
            shard = dataclasses.replace(chosen, images=chosen.images[keep], labels=chosen.labels[keep])
        accuracy: dict[str, float] = {}
        if len(shard):
            with torch.random.fork_rng(devices=[]):
                record = attack_suite(
                    model,
                    shard,
                    attacks=list(self.attacks),
                    eps=self.eps,
                    batch_size=self.batch_size,
                    seed=self.seed,
                    progress=False,
                )
            accuracy = dict(record["accuracy"])
        if world > 1:  # every rank runs the same attacks; an empty shard adds zeros
            names = [*parse_attacks(list(self.attacks)), "worst_case"]
            weighted = [accuracy.get(name, 0.0) * len(shard) for name in names]
            accuracy = dict(zip(names, (total / len(chosen) for total in dist.sum_list(weighted)), strict=True))
        return {f"eval_{name}": acc for name, acc in accuracy.items() if not math.isnan(acc)}
