"""Thin helpers over `torch.distributed` (DDP launched by `torchrun`); no-ops in one process."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as torch_dist
from torch import nn

from robustdistill.errors import ConfigError


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


class StudentDDP(nn.parallel.DistributedDataParallel):
    """DDP on the student that synchronises only the training passes.

    Calls made while the student's parameters are frozen (attacks run the model under
    `attack_mode`) or without autograd go straight to the wrapped network: no buffer broadcast,
    no gradient-reducer bookkeeping, no collective per attack step. Passes that can produce
    parameter gradients go through DDP, which averages the gradients over ranks in `backward`.
    """

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        super().__init__(module, **kwargs)
        self._probe = next((p for p in module.parameters() if p.requires_grad), None)

    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if self._probe is None or not self._probe.requires_grad or not torch.is_grad_enabled():
            return self.module(*inputs, **kwargs)
        return super().forward(*inputs, **kwargs)


def wrap(model: nn.Module, *, sync_bn: bool = False) -> nn.Module:
    """DDP-wrap the student (only the student: teachers stay plain, frozen replicas).

    With `sync_bn` (GPU only), BatchNorm layers become `SyncBatchNorm` (statistics over the global batch);
    the layers are replaced inside `model`, sharing its parameters, so `model` stays the network
    to save. Without it each rank normalises with its own slice's statistics.
    """
    if not is_initialized():
        return model
    on_gpu = next(model.parameters()).is_cuda
    if sync_bn and not on_gpu:
        raise ConfigError(
            "sync_bn=true needs GPUs (torch's SyncBatchNorm has no CPU kernels); on CPU drop sync_bn: "
            "each rank then normalises over its own slice of the global batch"
        )
    if sync_bn:
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if converted is not model:  # only when `model` itself is a BatchNorm layer
            raise ValueError("sync_bn needs a network that contains BatchNorm layers, not a bare BatchNorm layer")
    device_ids = [torch.cuda.current_device()] if on_gpu else None
    return StudentDDP(model, device_ids=device_ids, gradient_as_bucket_view=True)


def per_rank_batch(global_batch: int, world: int | None = None) -> int:
    """Samples per rank for a global batch: `global_batch / world`, which must divide evenly."""
    world = world_size() if world is None else world
    if global_batch % world:
        raise ConfigError(
            f"batch_size is the global batch and must be divisible by the {world} processes; "
            f"got {global_batch} (try {max(world, global_batch // world * world)})"
        )
    return global_batch // world


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank (one broadcast per tensor)."""
    if not is_initialized():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            torch_dist.broadcast(tensor.data, src=0)


def average_gradients(parameters: list[nn.Parameter]) -> None:
    """Average `.grad` over ranks for parameters outside the DDP wrapper (a method's own heads)."""
    if not is_initialized():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch_dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
        offset += grad.numel()


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


def sum_list(values: list[float]) -> list[float]:
    """Sum scalars over ranks (one all-reduce); the values themselves in one process."""
    if not is_initialized() or not values:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device())
    torch_dist.all_reduce(tensor)
    return tensor.tolist()


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` averaged over ranks (one all-reduce, no host sync); `tensor` itself in one process."""
    if not is_initialized():
        return tensor
    total = tensor.detach().clone()
    torch_dist.all_reduce(total)
    return total / world_size()


def cat_over_ranks(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor concatenated over ranks along dim 0 (one all-gather each); themselves in one process.

    Every rank's tensors must have the same shape: the training loop gives every rank an equal
    slice of each global batch (`drop_last=True`).
    """
    if not is_initialized():
        return tensors
    gathered = []
    for tensor in tensors:
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        torch_dist.all_gather(parts, tensor.detach().contiguous())
        gathered.append(torch.cat(parts))
    return tuple(gathered)


def gather_rng(state: Any) -> Any:
    """Every rank's copy of `state` (RNG states, ...): a list under DDP, so each rank resumes its own."""
    if not is_initialized():
        return state
    states: list[Any] = [None] * world_size()
    torch_dist.all_gather_object(states, state)
    return states
