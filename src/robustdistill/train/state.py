"""The training state: everything a checkpoint holds and a resumed run restores.

`TrainingState.state_dict()` is the checkpoint payload (format 1, unchanged since checkpoints
were introduced: files written before this module existed resume as they did);
`load_state_dict` puts a payload back. Under DDP the RNG states and the term sums are per rank:
they are saved as one list entry per rank and each rank restores its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from robustdistill.config import RunConfig
from robustdistill.methods.base import Method
from robustdistill.runtime import distributed as dist
from robustdistill.train.ema import EMA
from robustdistill.train.swa import SWA
from robustdistill.train.terms import TermAccumulator

CHECKPOINT_FORMAT = 1
#: what every checkpoint `fit` writes holds (`ema`, `swa` and `teachers` may be None or absent)
STATE_KEYS = ("model", "method", "optimizer", "scheduler", "accumulator", "epoch", "batch", "global_step", "rng")


def rng_state() -> dict[str, Any]:
    """The torch, Python, NumPy (and CUDA) generator states, as values `torch.load(weights_only=True)` reads."""
    kind, keys, position, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # NumPy's state as plain values and a tensor, which weights_only loading accepts
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from `rng_state()`'s value (NumPy and CUDA when it holds them)."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "numpy" in state:
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def this_rank(saved: Any, rank: int) -> Any:
    """This rank's entry of a per-rank list in a checkpoint (rank 0's when the run had fewer ranks)."""
    if isinstance(saved, list):
        return saved[rank] if rank < len(saved) else saved[0]
    return saved


@dataclass
class TrainingState:
    """Model, method, optimiser, schedule, EMA, SWA, term sums and position of a training run.

    `epoch` and `batch` say where training continues: the next step is batch `batch` of
    (0-based) epoch `epoch`; `global_step` counts the optimiser steps done.
    """

    config: RunConfig
    student: nn.Module
    method: Method
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    swa: SWA | None
    teacher_hashes: dict[str, str]
    accumulator: TermAccumulator
    epoch: int = 0
    batch: int = 0
    global_step: int = 0

    def weights(self) -> dict[str, nn.Module]:
        """The networks that are checkpointed, by the name an error message gives them."""
        return {"model": self.student, **({"EMA model": self.ema.model} if self.ema is not None else {})}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint payload; under DDP a collective (every rank must call it)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.model_dump(mode="json"),
            "model": self.student.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "accumulator": dist.gather_rng(self.accumulator.state()),
            "epoch": self.epoch,
            "batch": self.batch,
            "global_step": self.global_step,
            "rng": dist.gather_rng(rng_state()),
            "teachers": self.teacher_hashes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything `state_dict` saved, the random generators last (this rank's entries under DDP)."""
        rank = dist.rank()
        self.student.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if self.swa is not None and state.get("swa") is not None:
            self.swa.load_state_dict(state["swa"])
        self.accumulator.load(this_rank(state["accumulator"], rank))
        self.epoch, self.batch, self.global_step = int(state["epoch"]), int(state["batch"]), int(state["global_step"])
        set_rng_state(this_rank(state["rng"], rank))
