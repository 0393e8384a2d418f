"""Small helpers used across the package: seeding, devices, hashing."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def resolve_device(device: str | None = None) -> torch.device:
    """`auto` (or None) picks CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from robustdistill.errors import ConfigError

    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device '{device}' is not a device name; use auto, cpu, cuda or cuda:N") from None
    if chosen.type == "cuda" and (
        not torch.cuda.is_available() or (chosen.index is not None and chosen.index >= torch.cuda.device_count())
    ):
        count = torch.cuda.device_count()
        raise ConfigError(f"device '{device}' is not available here ({count} CUDA devices); use --device cpu")
    mps = getattr(torch.backends, "mps", None)
    if chosen.type not in ("cpu", "cuda") and not (chosen.type == "mps" and mps is not None and mps.is_available()):
        raise ConfigError(f"device '{device}' is not supported; use auto, cpu, cuda or cuda:N")
    return chosen


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
