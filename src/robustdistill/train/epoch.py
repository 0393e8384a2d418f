"""One training step and one epoch: the step, its logging and checkpoints, the epoch's record and evaluation."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from robustdistill.attacks.randomness import shared_random_starts
from robustdistill.config import RunConfig
from robustdistill.data.loader import stream_seed
from robustdistill.errors import Interrupted
from robustdistill.runtime import distributed as dist
from robustdistill.runtime.progress import Progress
from robustdistill.train import faults
from robustdistill.train.resume import write_checkpoint
from robustdistill.train.setup import FitContext
from robustdistill.train.signals import StopRequest
from robustdistill.train.state import TrainingState
from robustdistill.train.terms import TermAccumulator

#: stream key of the per-step seed of the attacks' random starts (see `attacks.randomness`)
_ATTACK_STREAM = 2


class Evaluation(Protocol):
    """What `fit` calls at the end of every `eval_every`-th epoch (and the last) on the model it would save.

    It returns `{"eval_<attack>": accuracy}` and must leave the training random generators as they were.
    """

    @property
    def label(self) -> str:
        """What is evaluated, for the progress line, e.g. `64 validation images (clean, pgd-20)`."""
        ...

    def __call__(self, model: nn.Module) -> dict[str, float]: ...


def _autocast(device: torch.device, config: RunConfig) -> contextlib.AbstractContextManager[Any]:
    use_bf16 = config.amp == "bf16" or (config.amp == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def stop_agreed(request: StopRequest, world: int) -> bool:
    """True on every rank once any rank received a stop signal (one all-reduce a step under DDP)."""
    if world == 1:
        return request.requested
    return dist.sum_list([1.0 if request.requested else 0.0])[0] > 0


def interrupted(request: StopRequest, epoch: int, step: int) -> Interrupted:
    """The `Interrupted` error of a stop at (1-based) `epoch`, optimiser step `step`."""
    signum = request.signum if request.signum is not None else 2
    return Interrupted(f"interrupted at epoch {epoch} step {step}; resume with --resume", signum)


def train_step(context: FitContext, state: TrainingState, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
    """One optimiser step on a batch: `terms = method(model, x, y, index)`, backward on `terms["loss"]`, SGD,
    schedule and EMA; returns the terms (added to the epoch's sums)."""
    cfg, method = context.config, state.method
    if context.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    context.model.train()
    method.train()
    # Random starts are a function of (seed, step, position in the global batch), so they
    # do not depend on the number of ranks nor on an interruption.
    step_seed = stream_seed(cfg.seed, state.global_step, _ATTACK_STREAM)
    with _autocast(context.device, cfg), shared_random_starts(step_seed, rank=context.rank, world_size=context.world):
        terms = method(context.model, x, y, index)
    state.optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if context.world > 1 and context.method_trainable:
        dist.average_gradients(context.method_trainable)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(context.trainable, cfg.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    if state.ema is not None:
        state.ema.update(state.student)
    state.global_step += 1
    state.accumulator.add(terms, state.global_step)
    return terms


def _show_step(context: FitContext, state: TrainingState, terms: dict[str, Tensor], bar: Progress, rate: float) -> None:
    """Move the bar; every `log_every` steps and at the epoch's end also show the running means (one sync)."""
    cfg = context.config
    if state.global_step % cfg.log_every == 0 or state.batch == context.steps_per_epoch:
        state.accumulator.check_finite(terms)
        means = dist.mean_dict(state.accumulator.means())
        bar.update(state.global_step, epoch=state.epoch + 1, epochs=cfg.epochs, rate=rate, **means)
    else:
        bar.update(state.global_step)


def train_epoch(
    context: FitContext, state: TrainingState, *, bar: Progress, request: StopRequest, ckpt_dir: Path
) -> tuple[int, float, dict[str, Tensor]]:
    """The steps of epoch `state.epoch` from batch `state.batch` on, checkpointing every `checkpoint_every` steps
    and on a stop request (then raising `Interrupted`); returns (images seen, start time, the last terms)."""
    cfg = context.config
    state.method.on_epoch_start(state.epoch)
    context.loader.set_epoch(state.epoch)
    first = state.batch
    if first == 0:
        state.accumulator = TermAccumulator()
    epoch_start = time.perf_counter()
    seen = 0
    terms: dict[str, Tensor] = {}
    for batch_index, (x, y, index) in enumerate(context.loader.iterate(start_batch=first), start=first):
        terms = train_step(context, state, x, y, index)
        seen += x.shape[0] * context.world
        state.batch = batch_index + 1
        _show_step(context, state, terms, bar, seen / max(time.perf_counter() - epoch_start, 1e-9))
        faults.after_step(state.global_step)
        mid_epoch = state.batch < context.steps_per_epoch
        if cfg.checkpoint_every and state.global_step % cfg.checkpoint_every == 0 and mid_epoch:
            state.accumulator.check_finite(terms)  # never checkpoint weights a NaN has reached
            write_checkpoint(state, ckpt_dir)
        if stop_agreed(request, context.world) and mid_epoch:
            state.accumulator.check_finite(terms)
            write_checkpoint(state, ckpt_dir)
            raise interrupted(request, state.epoch + 1, state.global_step)
    state.accumulator.check_finite(terms)
    return seen, epoch_start, terms


def epoch_record(context: FitContext, state: TrainingState, seen: int, epoch_start: float) -> dict[str, Any]:
    """The epoch's line of `metrics.jsonl`: lr, time, throughput, mean loss terms and the method's diagnostics."""
    return {
        "kind": "epoch",
        "epoch": state.epoch + 1,
        "step": state.global_step,
        "lr": state.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - epoch_start,
        "images_per_s": seen / max(time.perf_counter() - epoch_start, 1e-9),
        **{f"train_{k}": v for k, v in dist.mean_dict(state.accumulator.means()).items()},
        **dist.mean_dict(state.method.diagnostics()),  # equal shards: the mean of rank means
    }


def average_and_evaluate(
    context: FitContext, state: TrainingState, record: dict[str, Any], evaluation: Evaluation | None, bar: Progress
) -> None:
    """The end of epoch `state.epoch`: add it to the SWA average, evaluate when due; results go into `record`."""
    cfg, epoch, swa, ema = context.config, state.epoch, state.swa, state.ema
    last = epoch + 1 == cfg.epochs
    evaluate_now = evaluation is not None and cfg.eval_every and ((epoch + 1) % cfg.eval_every == 0 or last)
    if swa is not None and swa.averages(epoch):
        swa.update(state.student)
        if evaluate_now or last:  # the average is evaluated and saved with fresh BN
            swa.refresh_batch_norm(context.train_data, cfg.batch_size, context.device)
        record["swa_epochs"] = swa.count
    if evaluation is not None and evaluate_now:
        evaluated = swa.model if swa is not None and swa.count else (ema.model if ema is not None else state.student)
        bar.note(f"epoch {epoch + 1}: evaluating on {evaluation.label}")
        record.update(evaluation(evaluated))
