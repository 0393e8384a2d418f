"""Building what `fit` trains with: device placement, DDP wrapper, loader, optimiser, schedule, EMA, SWA."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robustdistill.config import RunConfig
from robustdistill.data import ArrayDataset, Loader
from robustdistill.errors import TrainingError
from robustdistill.methods.base import Method
from robustdistill.runtime import distributed as dist
from robustdistill.train.ema import EMA
from robustdistill.train.schedule import make_scheduler
from robustdistill.train.state import TrainingState
from robustdistill.train.swa import SWA
from robustdistill.train.terms import TermAccumulator
from robustdistill.utils import resolve_device, seed_everything, state_sha256


@dataclass
class FitContext:
    """What stays fixed while `fit` runs (and is not checkpointed): the state is in `TrainingState`."""

    config: RunConfig
    device: torch.device
    #: the student as the training passes call it (DDP-wrapped under torchrun, else the student itself)
    model: nn.Module
    loader: Loader
    train_data: ArrayDataset
    #: the optimiser's parameters: the student's, then the method's own (outside DDP, averaged by hand)
    trainable: list[nn.Parameter]
    method_trainable: list[nn.Parameter]
    channels_last: bool
    rank: int
    world: int

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)


def uses_channels_last(device: torch.device, config: RunConfig) -> bool:
    """`channels_last: on`, or `auto` on CUDA."""
    return config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")


def _place(student: nn.Module, method: Method, device: torch.device, channels_last: bool, cfg: RunConfig) -> nn.Module:
    """Move student and method to `device` (teachers to the student's layout); the DDP-wrapped student."""
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    student.to(device=device, memory_format=memory_format)  # type: ignore[call-overload]  # stubs lack it
    method.to(device)
    for teacher in method.teachers():  # teachers see the student's (channels_last) inputs: same layout
        teacher.to(memory_format=memory_format)  # type: ignore[call-overload]
    model = dist.wrap(student, sync_bn=cfg.sync_bn)
    dist.broadcast_module(method)  # a method's own heads and state start equal on every rank
    return model


def _loader(train_data: ArrayDataset, cfg: RunConfig, device: torch.device, augment: dict[str, Any] | None) -> Loader:
    """The shuffled training loader; `batch_size` is the global batch, each rank takes its slice of every one."""
    loader = Loader(
        train_data,
        dist.per_rank_batch(cfg.batch_size, dist.world_size()),
        shuffle=True,
        seed=cfg.seed,
        augment=augment,
        drop_last=True,
        rank=dist.rank(),
        world_size=dist.world_size(),
        device=str(device),
    )
    if len(loader) == 0:
        raise TrainingError(
            f"the training set has {len(train_data)} samples, fewer than one batch of "
            f"{cfg.batch_size}; lower --batch-size or raise --subset"
        )
    return loader


def prepare(
    student: nn.Module, method: Method, train_data: ArrayDataset, cfg: RunConfig, augment: dict[str, Any] | None
) -> tuple[FitContext, TrainingState]:
    """Seed (`seed + rank`), place the models, build loader, SGD, schedule, EMA and SWA: the state at step 0."""
    rank, world = dist.rank(), dist.world_size()
    device = resolve_device(cfg.device) if not dist.is_initialized() else dist.device()
    seed_everything(cfg.seed + rank, deterministic=cfg.deterministic)
    channels_last = uses_channels_last(device, cfg)
    model = _place(student, method, device, channels_last, cfg)
    method_trainable = [p for p in method.parameters() if p.requires_grad]
    trainable = [p for p in student.parameters() if p.requires_grad] + method_trainable
    optimizer = torch.optim.SGD(
        trainable, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    loader = _loader(train_data, cfg, device, augment)
    scheduler = make_scheduler(
        optimizer,
        steps_per_epoch=len(loader),
        epochs=cfg.epochs,
        schedule=cfg.schedule,
        milestones=cfg.milestone_epochs(),
        gamma=cfg.lr_gamma,
        warmup_epochs=cfg.warmup_epochs,
    )
    state = TrainingState(
        config=cfg,
        student=student,
        method=method,
        optimizer=optimizer,
        scheduler=scheduler,
        ema=EMA(student, cfg.ema_decay) if cfg.ema_decay else None,
        swa=SWA(student, cfg.swa_start) if cfg.swa_start else None,
        teacher_hashes={role: state_sha256(t) for role, t in method.named_teachers().items()},
        accumulator=TermAccumulator(),
    )
    context = FitContext(
        cfg, device, model, loader, train_data, trainable, method_trainable, channels_last, rank, world
    )
    return context, state
