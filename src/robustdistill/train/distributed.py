"""Thin helpers over `torch.distributed` (DDP launched by `torchrun`); no-ops in one process."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn


def is_initialized() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    return torch_dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return torch_dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); returns whether it did."""
    if is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_initialized()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch_dist.init_process_group(backend=backend)
    return True


def device() -> torch.device:
    if torch.cuda.is_available() and torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def wrap(model: nn.Module, *, sync_bn: bool = False) -> nn.Module:
    """DDP-wrap the student (only the student: teachers stay plain, frozen replicas)."""
    if not is_initialized():
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier() -> None:
    if is_initialized():
        torch_dist.barrier()


def mean_dict(values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (one all-reduce)."""
    if not is_initialized() or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device())
    torch_dist.all_reduce(tensor)
    tensor /= world_size()
    return dict(zip(keys, tensor.tolist(), strict=True))


def gather_rng(state: dict[str, Any]) -> Any:
    """Every rank's RNG state (a list under DDP, so each rank resumes its own stream)."""
    if not is_initialized():
        return state
    states: list[Any] = [None] * world_size()
    torch_dist.all_gather_object(states, state)
    return states
