"""Writing the training state to `run_dir/checkpoints` and resuming from the newest valid checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustdistill.config import RunConfig
from robustdistill.errors import CheckpointError, one_line
from robustdistill.runtime import distributed as dist
from robustdistill.train.checkpoint import (
    checkpoint_path,
    latest_valid_checkpoint,
    prune_checkpoints,
    remove_temporaries,
    save_checkpoint,
)
from robustdistill.train.state import CHECKPOINT_FORMAT, STATE_KEYS, TrainingState
from robustdistill.train.terms import check_finite_weights

# Configuration keys that may change between a run and its resumption without changing the result.
FREE_ON_RESUME = frozenset(
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


def check_resumable(path: Path, state: Any, cfg: RunConfig) -> None:
    """Refuse a checkpoint that is not a training state of this run's configuration."""
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint '{path}' is not a training state of format {CHECKPOINT_FORMAT}")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' lacks {', '.join(missing)}; it was not written by fit")
    saved = state.get("config")
    current = cfg.model_dump(mode="json")
    if isinstance(saved, dict):
        changed = [k for k in current if k not in FREE_ON_RESUME and k in saved and saved[k] != current[k]]
        if changed:
            details = ", ".join(f"{k} was {saved[k]!r}, now {current[k]!r}" for k in changed[:3])
            raise CheckpointError(
                f"--resume with a different configuration than the checkpoint '{path.name}' ({details}); "
                "resume with the values the run started with, or start a new run"
            )


def check_teachers(path: Path, state: dict[str, Any], teachers: dict[str, str]) -> None:
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


def resume(state: TrainingState, ckpt_dir: Path, device: torch.device) -> None:
    """Load the newest valid checkpoint of `ckpt_dir` into `state`; refuse one of another run or teacher."""
    found = latest_valid_checkpoint(ckpt_dir, map_location=device)
    if found is None:
        raise CheckpointError(f"--resume was given but '{ckpt_dir}' holds no valid checkpoint")
    path, saved = found
    check_resumable(path, saved, state.config)
    check_teachers(path, saved, state.teacher_hashes)
    try:
        state.load_state_dict(saved)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
        raise CheckpointError(f"checkpoint '{path}' does not fit this run: {one_line(error, 200)}") from None
    if dist.is_main():
        remove_temporaries(ckpt_dir)


def write_checkpoint(state: TrainingState, ckpt_dir: Path) -> None:
    """Checkpoint `state` as `step-N.ckpt` (rank 0 writes, the `keep_checkpoints` newest stay); all ranks call it."""
    check_finite_weights(state.weights(), state.global_step)
    payload = state.state_dict()
    if dist.is_main():
        save_checkpoint(payload, checkpoint_path(ckpt_dir, state.global_step))
        prune_checkpoints(ckpt_dir, state.config.keep_checkpoints)
    dist.barrier()
