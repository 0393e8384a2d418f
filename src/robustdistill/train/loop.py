"""The one training loop every method and every command uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from robustdistill.config import RunConfig, build
from robustdistill.data import ArrayDataset
from robustdistill.methods.base import Method
from robustdistill.runtime import distributed as dist
from robustdistill.runtime.metrics import MetricsLog
from robustdistill.runtime.progress import Progress
from robustdistill.train.epoch import (
    Evaluation,
    average_and_evaluate,
    epoch_record,
    interrupted,
    stop_agreed,
    train_epoch,
)
from robustdistill.train.resume import resume as resume_from
from robustdistill.train.resume import write_checkpoint
from robustdistill.train.setup import prepare
from robustdistill.train.signals import stop_requests
from robustdistill.train.state import TrainingState
from robustdistill.train.terms import check_finite_weights

if TYPE_CHECKING:
    from robustdistill.models import Classifier


@dataclass
class FitResult:
    """What `fit` returns: the final step, the last epoch's metrics and where things were written."""

    run_dir: Path
    global_step: int
    history: list[dict[str, Any]] = field(default_factory=list)


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
    evaluation: Evaluation | None = None,
    resume: bool = False,
    progress: bool = True,
    augment: dict[str, Any] | None = None,
    **overrides: Any,
) -> FitResult:
    """Train `student` with `method` on `train_data`; checkpoints and logs go to `run_dir`.

    Keyword overrides (`epochs=`, `lr=`, ...) replace fields of `config`. With `resume=True`
    training continues from the newest valid checkpoint in `run_dir/checkpoints`, restoring
    the whole `TrainingState` (model, optimiser, scheduler, EMA, SWA, method state, RNG states,
    the position in the epoch). `evaluation`, when given, runs every `eval_every` epochs.
    """
    cfg = _resolve_config(config, overrides)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    context, state = prepare(student, method, train_data, cfg, augment)
    log = MetricsLog(run_dir, enabled=dist.is_main())
    if resume:
        resume_from(state, ckpt_dir, context.device)
        log.truncate_after(state.global_step)
    start_epoch = state.epoch
    total = cfg.epochs * context.steps_per_epoch
    bar = Progress(enabled=progress and dist.is_main(), total=total, done=state.global_step)
    history: list[dict[str, Any]] = []
    with bar, stop_requests() as request:  # Ctrl-C / SIGTERM: checkpoint after the step, then Interrupted
        if not resume:
            write_checkpoint(state, ckpt_dir)
        for epoch in range(start_epoch, cfg.epochs):
            seen, epoch_start, _ = train_epoch(context, state, bar=bar, request=request, ckpt_dir=ckpt_dir)
            record = epoch_record(context, state, seen, epoch_start)
            average_and_evaluate(context, state, record, evaluation, bar)
            history.append(record)
            log.write(record)
            bar.log_epoch(record)
            state.epoch, state.batch = epoch + 1, 0
            write_checkpoint(state, ckpt_dir)
            if stop_agreed(request, context.world) and epoch + 1 < cfg.epochs:
                raise interrupted(request, epoch + 1, state.global_step)
    log.close()
    finished_before = resume and start_epoch >= cfg.epochs and _final_saved(run_dir, state)
    if dist.is_main() and not finished_before:  # resuming a finished run leaves its results as they are
        _save_final(state, run_dir)
    dist.barrier()
    return FitResult(run_dir=run_dir, global_step=state.global_step, history=history)


def _final_models(state: TrainingState) -> dict[str, nn.Module]:
    """The weights files of a finished run: the student, its EMA and its SWA average when kept."""
    ema, swa = state.ema, state.swa
    return {
        "model": state.student,
        **({"model_ema": ema.model} if ema is not None else {}),
        **({"model_swa": swa.model} if swa is not None else {}),
    }


def _final_saved(run_dir: Path, state: TrainingState) -> bool:
    names = _final_models(state)
    return all((run_dir / f"{name}{suffix}").is_file() for name in names for suffix in (".safetensors", ".json"))


def _save_final(state: TrainingState, run_dir: Path) -> None:
    """Write `model.safetensors` (and the EMA / SWA weights) after checking no tensor holds NaN or Inf."""
    from robustdistill import models

    swa = {"SWA model": state.swa.model} if state.swa is not None else {}
    check_finite_weights({**state.weights(), **swa}, state.global_step)
    for name, module in _final_models(state).items():
        # The student is built by models.create; its EMA and SWA copies are deep copies of it.
        models.save(cast("Classifier", module), run_dir / f"{name}.safetensors")
