"""The one training loop every method and every command uses."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.config import RunConfig, build
from robustdistill.data import ArrayDataset, Loader
from robustdistill.errors import CheckpointError, TrainingError
from robustdistill.methods.base import Method
from robustdistill.train import distributed as dist
from robustdistill.train.checkpoint import (
    checkpoint_path,
    latest_valid_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from robustdistill.train.ema import EMA
from robustdistill.train.metrics import MetricsLog
from robustdistill.train.progress import Progress
from robustdistill.train.schedule import make_scheduler
from robustdistill.utils import resolve_device, seed_everything

CHECKPOINT_FORMAT = 1


@dataclass
class FitResult:
    """What `fit` returns: the final step, the last epoch's metrics and where things were written."""

    run_dir: Path
    global_step: int
    history: list[dict[str, Any]] = field(default_factory=list)


def _autocast(device: torch.device, config: RunConfig) -> contextlib.AbstractContextManager[Any]:
    use_bf16 = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _channels_last(device: torch.device, config: RunConfig) -> bool:
    return config.channels_last == "on" or (config.channels_last == "auto" and device.type == "cuda")


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Accumulator:
    """Sums of the logged loss terms kept on the device; read (one sync) only when logging."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.first_bad: dict[str, Tensor] = {}

    def add(self, terms: dict[str, Tensor], step: int) -> None:
        for key, value in terms.items():
            value = value.detach().float()
            if key in self.sums:
                self.sums[key] += value
            else:
                self.sums[key] = value.clone()
        self.count += 1
        loss = terms["loss"].detach()
        bad = ~torch.isfinite(loss)
        marker = torch.where(bad, torch.tensor(step, device=loss.device), torch.tensor(-1, device=loss.device))
        if "loss" in self.first_bad:
            previous = self.first_bad["loss"]
            self.first_bad["loss"] = torch.where(previous >= 0, previous, marker)
        else:
            self.first_bad["loss"] = marker

    def means(self) -> dict[str, float]:
        if not self.count:
            return {}
        keys = list(self.sums)
        values = (torch.stack([self.sums[k] for k in keys]) / self.count).tolist()
        return dict(zip(keys, values, strict=True))

    def check_finite(self, terms_seen: dict[str, Tensor]) -> None:
        if "loss" not in self.first_bad:
            return
        step = int(self.first_bad["loss"])
        if step >= 0:
            names = [k for k, v in terms_seen.items() if not torch.isfinite(v.detach()).all()]
            which = ", ".join(names) or "loss"
            raise TrainingError(
                f"non-finite loss at step {step} (terms: {which}); lower the learning rate or check the data. "
                "The last good checkpoint is kept."
            )

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "count": self.count}

    def load(self, state: dict[str, Any]) -> None:
        self.sums = dict(state["sums"])
        self.count = int(state["count"])


def _resolve_config(config: RunConfig | None, overrides: dict[str, Any]) -> RunConfig:
    base = config.model_dump() if config is not None else {}
    base.update(overrides)
    return build(base)


def fit(
    student: nn.Module,
    method: Method,
    train_data: ArrayDataset,
    *,
    config: RunConfig | None = None,
    run_dir: str | Path,
    eval_data: ArrayDataset | None = None,
    resume: bool = False,
    progress: bool = True,
    augment: dict[str, Any] | None = None,
    **overrides: Any,
) -> FitResult:
    """Train `student` with `method` on `train_data`; checkpoints and logs go to `run_dir`.

    Keyword overrides (`epochs=`, `lr=`, ...) replace fields of `config`. With `resume=True`
    training continues from the newest valid checkpoint in `run_dir/checkpoints`, restoring
    model, optimiser, scheduler, EMA, method state, RNG states and the position in the epoch.
    """
    cfg = _resolve_config(config, overrides)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    rank, world = dist.rank(), dist.world_size()
    device = resolve_device(cfg.device) if not dist.is_initialized() else dist.device()
    seed_everything(cfg.seed + rank, deterministic=cfg.deterministic)

    memory_format = torch.channels_last if _channels_last(device, cfg) else torch.preserve_format
    student.to(device=device, memory_format=memory_format)
    method.to(device)
    model = dist.wrap(student, sync_bn=cfg.sync_bn)

    trainable = [p for p in student.parameters() if p.requires_grad] + [
        p for p in method.parameters() if p.requires_grad
    ]
    optimizer = torch.optim.SGD(
        trainable, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    loader = Loader(
        train_data,
        cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        augment=augment,
        drop_last=True,
        rank=rank,
        world_size=world,
        device=str(device),
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise TrainingError(
            f"the training set has {len(train_data)} samples, fewer than one batch of "
            f"{cfg.batch_size * world}; lower --batch-size or raise --subset"
        )
    scheduler = make_scheduler(
        optimizer,
        steps_per_epoch=steps_per_epoch,
        epochs=cfg.epochs,
        schedule=cfg.schedule,
        milestones=cfg.milestone_epochs(),
        gamma=cfg.lr_gamma,
        warmup_epochs=cfg.warmup_epochs,
    )
    ema = EMA(student, cfg.ema_decay) if cfg.ema_decay else None
    accumulator = _Accumulator()
    start_epoch, start_batch, global_step = 0, 0, 0

    log = MetricsLog(run_dir, enabled=dist.is_main())
    if resume:
        found = latest_valid_checkpoint(ckpt_dir, map_location=device)
        if found is None:
            raise CheckpointError(f"--resume was given but '{ckpt_dir}' holds no valid checkpoint")
        _, state = found
        student.load_state_dict(state["model"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        accumulator.load(state["accumulator"])
        start_epoch, start_batch, global_step = state["epoch"], state["batch"], state["global_step"]
        rng = state["rng"][rank] if isinstance(state["rng"], list) else state["rng"]
        _set_rng_state(rng)
        log.truncate_after(global_step)

    def make_state(epoch: int, batch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": cfg.model_dump(mode="json"),
            "model": student.state_dict(),
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "accumulator": accumulator.state(),
            "epoch": epoch,
            "batch": batch,
            "global_step": global_step,
            "rng": dist.gather_rng(_rng_state()),
        }

    def write_checkpoint(epoch: int, batch: int) -> None:
        state = make_state(epoch, batch)
        if dist.is_main():
            save_checkpoint(state, checkpoint_path(ckpt_dir, global_step))
            prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
        dist.barrier()

    if not resume:
        write_checkpoint(0, 0)

    bar = Progress(enabled=progress and dist.is_main(), total=cfg.epochs * steps_per_epoch, done=global_step)
    history: list[dict[str, Any]] = []
    last_terms: dict[str, Tensor] = {}
    with bar:
        for epoch in range(start_epoch, cfg.epochs):
            method.on_epoch_start(epoch)
            loader.set_epoch(epoch)
            first = start_batch if epoch == start_epoch else 0
            if first == 0:
                accumulator = _Accumulator()
            epoch_start = time.perf_counter()
            seen = 0
            for batch_index, (x, y, index) in _enumerate_from(loader, first):
                if memory_format is torch.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                model.train()
                method.train()
                with _autocast(device, cfg):
                    terms = method(model, x, y, index)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update(student)
                global_step += 1
                seen += x.shape[0] * world
                accumulator.add(terms, global_step)
                last_terms = terms
                if global_step % cfg.log_every == 0 or batch_index + 1 == steps_per_epoch:
                    accumulator.check_finite(last_terms)
                    means = dist.mean_dict(accumulator.means())
                    rate = seen / max(time.perf_counter() - epoch_start, 1e-9)
                    bar.update(global_step, epoch=epoch + 1, epochs=cfg.epochs, rate=rate, **means)
                if (
                    cfg.checkpoint_every
                    and global_step % cfg.checkpoint_every == 0
                    and batch_index + 1 < steps_per_epoch
                ):
                    write_checkpoint(epoch, batch_index + 1)
            accumulator.check_finite(last_terms)
            record: dict[str, Any] = {
                "kind": "epoch",
                "epoch": epoch + 1,
                "step": global_step,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - epoch_start,
                "images_per_s": seen / max(time.perf_counter() - epoch_start, 1e-9),
                **{f"train_{k}": v for k, v in dist.mean_dict(accumulator.means()).items()},
                **method.diagnostics(),
            }
            if (
                eval_data is not None
                and cfg.eval_every
                and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
            ):
                record.update(_evaluate_during_training(ema.model if ema else student, eval_data, cfg))
            history.append(record)
            log.write(record)
            bar.log_epoch(record)
            write_checkpoint(epoch + 1, 0)
    log.close()
    if dist.is_main():
        _save_final(student, ema, run_dir)
    dist.barrier()
    return FitResult(run_dir=run_dir, global_step=global_step, history=history)


def _enumerate_from(loader: Loader, first: int) -> Iterator[tuple[int, tuple[Tensor, Tensor, Tensor]]]:
    return enumerate(loader.iterate(start_batch=first), start=first)


def _evaluate_during_training(model: nn.Module, data: ArrayDataset, cfg: RunConfig) -> dict[str, float]:
    """A quick evaluation on a fixed subset; the training RNG is left untouched."""
    from robustdistill.evaluate import run as run_evaluation

    with torch.random.fork_rng(devices=[]):
        record = run_evaluation(
            model,
            data,
            attacks=cfg.eval_attacks,
            eps=cfg.resolved_eps(),
            n=cfg.eval_n,
            batch_size=max(cfg.batch_size, 256),
            seed=cfg.seed,
            progress=False,
        )
    return {f"eval_{name}": acc for name, acc in record["accuracy"].items() if not math.isnan(acc)}


def _save_final(student: nn.Module, ema: EMA | None, run_dir: Path) -> None:
    from robustdistill import models

    models.save(student, run_dir / "model.safetensors")
    if ema is not None:
        models.save(ema.model, run_dir / "model_ema.safetensors")
