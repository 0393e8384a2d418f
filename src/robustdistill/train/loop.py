"""The one training loop every method and every command uses."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustdistill.attacks.randomness import shared_random_starts
from robustdistill.config import RunConfig, build
from robustdistill.data import ArrayDataset, Loader
from robustdistill.data.loader import stream_seed
from robustdistill.errors import CheckpointError, Interrupted, TrainingError, one_line
from robustdistill.methods.base import Method
from robustdistill.train import distributed as dist
from robustdistill.train import faults
from robustdistill.train.checkpoint import (
    checkpoint_path,
    latest_valid_checkpoint,
    prune_checkpoints,
    remove_temporaries,
    save_checkpoint,
)
from robustdistill.train.ema import EMA
from robustdistill.train.metrics import MetricsLog
from robustdistill.train.progress import Progress
from robustdistill.train.schedule import make_scheduler
from robustdistill.train.signals import StopRequest, stop_requests
from robustdistill.train.swa import SWA
from robustdistill.utils import resolve_device, seed_everything, state_sha256

CHECKPOINT_FORMAT = 1
#: stream key of the per-step seed of the attacks' random starts (see `attacks.randomness`)
_ATTACK_STREAM = 2
_STATE_KEYS = ("model", "method", "optimizer", "scheduler", "accumulator", "epoch", "batch", "global_step", "rng")
# Configuration keys that may change between a run and its resumption without changing the result.
_FREE_ON_RESUME = frozenset(
    {
        "name",
        "run_dir",
        "overwrite",
        "data_dir",
        "data_files",
        "download",
        "teacher",
        "teacher_arch",
        "natural_teacher",
        "device",
        "eval_every",
        "eval_n",
        "eval_attacks",
        "log_every",
        "checkpoint_every",
        "keep_checkpoints",
    }
)


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
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        # NumPy's state as plain values and a tensor, which weights_only loading accepts
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "numpy" in state:
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
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


def _check_resumable(path: Path, state: Any, cfg: RunConfig) -> None:
    """Refuse a checkpoint that is not a training state of this run's configuration."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint '{path}' is not a training state of format {CHECKPOINT_FORMAT}")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' lacks {', '.join(missing)}; it was not written by fit")
    saved = state.get("config")
    current = cfg.model_dump(mode="json")
    if isinstance(saved, dict):
        changed = [k for k in current if k not in _FREE_ON_RESUME and k in saved and saved[k] != current[k]]
        if changed:
            details = ", ".join(f"{k} was {saved[k]!r}, now {current[k]!r}" for k in changed[:3])
            raise CheckpointError(
                f"--resume with a different configuration than the checkpoint '{path.name}' ({details}); "
                "resume with the values the run started with, or start a new run"
            )


def _check_teachers(path: Path, state: dict[str, Any], teachers: dict[str, str]) -> None:
    """Refuse to resume with other teacher weights than the run began with (checkpoints record their hashes)."""
    saved = state.get("teachers")
    if not isinstance(saved, dict):
        return
    for role in sorted(set(saved) | set(teachers)):
        if saved.get(role) != teachers.get(role):
            was, now = saved.get(role), teachers.get(role)
            raise CheckpointError(
                f"--resume with a different {role.replace('_', ' ')} than the checkpoint '{path.name}' "
                f"(weights SHA-256 was {was[:12] if was else 'none'}, now {now[:12] if now else 'none'}); "
                "resume with the teacher the run started with, or start a new run"
            )


def check_finite_weights(modules: dict[str, nn.Module], step: int) -> None:
    """Refuse weights (parameters and buffers) holding NaN or Inf: they are never checkpointed nor saved."""
    for role, module in modules.items():
        floats = [(name, t) for name, t in module.state_dict().items() if t.is_floating_point() and t.numel()]
        if not floats or bool(torch.stack([torch.isfinite(t).all() for _, t in floats]).all()):
            continue
        name = next(name for name, t in floats if not bool(torch.isfinite(t).all()))
        raise TrainingError(
            f"the {role}'s tensor '{name}' became non-finite (NaN or Inf) by step {step}; lower the learning "
            "rate or check the data. The last good checkpoint is kept."
        )


def _stop_agreed(request: StopRequest, world: int) -> bool:
    """True on every rank once any rank received a stop signal (one all-reduce a step under DDP)."""
    if world == 1:
        return request.requested
    return dist.sum_list([1.0 if request.requested else 0.0])[0] > 0


def _interrupted(request: StopRequest, epoch: int, step: int) -> Interrupted:
    signum = request.signum if request.signum is not None else 2
    return Interrupted(f"interrupted at epoch {epoch} step {step}; resume with --resume", signum)


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
    for teacher in method.teachers():  # teachers see the student's (channels_last) inputs: same layout
        teacher.to(memory_format=memory_format)
    model = dist.wrap(student, sync_bn=cfg.sync_bn)
    dist.broadcast_module(method)  # a method's own heads and state start equal on every rank

    method_trainable = [p for p in method.parameters() if p.requires_grad]  # outside DDP: averaged by hand
    trainable = [p for p in student.parameters() if p.requires_grad] + method_trainable
    optimizer = torch.optim.SGD(
        trainable, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    loader = Loader(  # batch_size is the global batch: each rank takes its slice of every global batch
        train_data,
        dist.per_rank_batch(cfg.batch_size, world),
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
            f"{cfg.batch_size}; lower --batch-size or raise --subset"
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
    swa = SWA(student, cfg.swa_start) if cfg.swa_start else None
    accumulator = _Accumulator()
    start_epoch, start_batch, global_step = 0, 0, 0

    log = MetricsLog(run_dir, enabled=dist.is_main())
    teacher_hashes = {role: state_sha256(t) for role, t in method.named_teachers().items()}
    weights = {"model": student, **({"EMA model": ema.model} if ema is not None else {})}
    if resume:
        found = latest_valid_checkpoint(ckpt_dir, map_location=device)
        if found is None:
            raise CheckpointError(f"--resume was given but '{ckpt_dir}' holds no valid checkpoint")
        path, state = found
        _check_resumable(path, state, cfg)
        _check_teachers(path, state, teacher_hashes)
        try:
            student.load_state_dict(state["model"])
            method.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            if swa is not None and state.get("swa") is not None:
                swa.load_state_dict(state["swa"])
            accumulator.load(_this_rank(state["accumulator"], rank))
            start_epoch, start_batch, global_step = int(state["epoch"]), int(state["batch"]), int(state["global_step"])
            _set_rng_state(_this_rank(state["rng"], rank))
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
            raise CheckpointError(f"checkpoint '{path}' does not fit this run: {one_line(error, 200)}") from None
        if dist.is_main():
            remove_temporaries(ckpt_dir)
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
            "swa": swa.state_dict() if swa is not None else None,
            "accumulator": dist.gather_rng(accumulator.state()),
            "epoch": epoch,
            "batch": batch,
            "global_step": global_step,
            "rng": dist.gather_rng(_rng_state()),
            "teachers": teacher_hashes,
        }

    def write_checkpoint(epoch: int, batch: int) -> None:
        check_finite_weights(weights, global_step)
        state = make_state(epoch, batch)
        if dist.is_main():
            save_checkpoint(state, checkpoint_path(ckpt_dir, global_step))
            prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
        dist.barrier()

    bar = Progress(enabled=progress and dist.is_main(), total=cfg.epochs * steps_per_epoch, done=global_step)
    history: list[dict[str, Any]] = []
    last_terms: dict[str, Tensor] = {}
    with bar, stop_requests() as request:  # Ctrl-C / SIGTERM: checkpoint after the step, then Interrupted
        if not resume:
            write_checkpoint(0, 0)
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
                # Random starts are a function of (seed, step, position in the global batch), so they
                # do not depend on the number of ranks nor on an interruption.
                step_seed = stream_seed(cfg.seed, global_step, _ATTACK_STREAM)
                with _autocast(device, cfg), shared_random_starts(step_seed, rank=rank, world_size=world):
                    terms = method(model, x, y, index)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                if world > 1 and method_trainable:
                    dist.average_gradients(method_trainable)
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
                else:
                    bar.update(global_step)
                faults.after_step(global_step)
                if (
                    cfg.checkpoint_every
                    and global_step % cfg.checkpoint_every == 0
                    and batch_index + 1 < steps_per_epoch
                ):
                    accumulator.check_finite(last_terms)  # never checkpoint weights a NaN has reached
                    write_checkpoint(epoch, batch_index + 1)
                if _stop_agreed(request, world) and batch_index + 1 < steps_per_epoch:
                    accumulator.check_finite(last_terms)
                    write_checkpoint(epoch, batch_index + 1)
                    raise _interrupted(request, epoch + 1, global_step)
            accumulator.check_finite(last_terms)
            record: dict[str, Any] = {
                "kind": "epoch",
                "epoch": epoch + 1,
                "step": global_step,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - epoch_start,
                "images_per_s": seen / max(time.perf_counter() - epoch_start, 1e-9),
                **{f"train_{k}": v for k, v in dist.mean_dict(accumulator.means()).items()},
                **dist.mean_dict(method.diagnostics()),  # equal shards: the mean of rank means
            }
            evaluate_now = (
                eval_data is not None
                and cfg.eval_every
                and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs)
            )
            if swa is not None and swa.averages(epoch):
                swa.update(student)
                if evaluate_now or epoch + 1 == cfg.epochs:  # the average is evaluated and saved with fresh BN
                    swa.refresh_batch_norm(train_data, cfg.batch_size, device)
                record["swa_epochs"] = swa.count
            if evaluate_now:
                evaluated = swa.model if swa is not None and swa.count else (ema.model if ema else student)
                shown = min(cfg.eval_n, len(eval_data))
                attacks = ", ".join(cfg.eval_attacks)
                bar.note(f"epoch {epoch + 1}: evaluating on {shown} {eval_data.split} images ({attacks})")
                record.update(_evaluate_during_training(evaluated, eval_data, cfg))
            history.append(record)
            log.write(record)
            bar.log_epoch(record)
            write_checkpoint(epoch + 1, 0)
            if _stop_agreed(request, world) and epoch + 1 < cfg.epochs:
                raise _interrupted(request, epoch + 1, global_step)
    log.close()
    finished_before = resume and start_epoch >= cfg.epochs and _final_saved(run_dir, ema, swa)
    if dist.is_main() and not finished_before:  # resuming a finished run leaves its results as they are
        check_finite_weights({**weights, **({"SWA model": swa.model} if swa is not None else {})}, global_step)
        _save_final(student, ema, swa, run_dir)
    dist.barrier()
    return FitResult(run_dir=run_dir, global_step=global_step, history=history)


def _enumerate_from(loader: Loader, first: int) -> Iterator[tuple[int, tuple[Tensor, Tensor, Tensor]]]:
    return enumerate(loader.iterate(start_batch=first), start=first)


def _this_rank(saved: Any, rank: int) -> Any:
    """This rank's entry of a per-rank list in a checkpoint (rank 0's when the run had fewer ranks)."""
    if isinstance(saved, list):
        return saved[rank] if rank < len(saved) else saved[0]
    return saved


def _evaluate_during_training(model: nn.Module, data: ArrayDataset, cfg: RunConfig) -> dict[str, float]:
    """A quick evaluation on a fixed subset; the training RNG is left untouched.

    Under DDP the subset is split into contiguous shards, one per rank, and the accuracies are
    reduced over ranks (weighted by shard size): the same examples as one process, `world` times faster.
    """
    from robustdistill.data import subset
    from robustdistill.evaluate import attack_suite

    chosen = subset(data, cfg.eval_n, seed=cfg.seed) if cfg.eval_n < len(data) else data
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
                attacks=cfg.eval_attacks,
                eps=cfg.resolved_eps(),
                batch_size=max(cfg.batch_size, 256),
                seed=cfg.seed,
                progress=False,
            )
        accuracy = dict(record["accuracy"])
    if world > 1:  # every rank runs the same attacks; an empty shard adds zeros
        names = _eval_names(cfg)
        weighted = [accuracy.get(name, 0.0) * len(shard) for name in names]
        accuracy = dict(zip(names, (total / len(chosen) for total in dist.sum_list(weighted)), strict=True))
    return {f"eval_{name}": acc for name, acc in accuracy.items() if not math.isnan(acc)}


def _eval_names(cfg: RunConfig) -> list[str]:
    from robustdistill.evaluate.suite import parse_attacks

    return [*parse_attacks(cfg.eval_attacks), "worst_case"]


def _final_saved(run_dir: Path, ema: EMA | None, swa: SWA | None) -> bool:
    names = ["model"] + (["model_ema"] if ema is not None else []) + (["model_swa"] if swa is not None else [])
    return all((run_dir / f"{name}{suffix}").is_file() for name in names for suffix in (".safetensors", ".json"))


def _save_final(student: nn.Module, ema: EMA | None, swa: SWA | None, run_dir: Path) -> None:
    from robustdistill import models

    models.save(student, run_dir / "model.safetensors")
    if ema is not None:
        models.save(ema.model, run_dir / "model_ema.safetensors")
    if swa is not None:
        models.save(swa.model, run_dir / "model_swa.safetensors")
