"""What a run directory is: the folder that `train-teacher`, `distill` and `demo` write into.

One meaning for the whole code base: `is_run_dir` (the run assembly refuses to overwrite one, the
lock guards one) and `has_results` (the report reads one) are the same folder at two moments.
"""

from __future__ import annotations

from pathlib import Path

#: the files and folders a run writes besides its config.yaml
RESULT_FILES = (
    "model.safetensors",
    "model.json",
    "model_ema.safetensors",
    "model_ema.json",
    "model_swa.safetensors",
    "model_swa.json",
    "metrics.jsonl",
    "checkpoints",
    "results.json",
    "tensorboard",
)


def is_run_dir(path: str | Path) -> bool:
    """A folder written by a run: its config.yaml or any of its result files is there."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in ("config.yaml", *RESULT_FILES))


def has_results(path: str | Path) -> bool:
    """A run directory with something to report: its metrics log or its final weights."""
    path = Path(path)
    return path.is_dir() and ((path / "metrics.jsonl").is_file() or (path / "model.safetensors").is_file())
