"""Crash-safe checkpoints.

File layout: the magic `RDCKPT`, a format version byte, the SHA-256 (hex) of the payload, then
the payload written by `torch.save`. Files are written to a temporary name, flushed, fsynced
and renamed, so a crash leaves either the old file or the new one, never half of one; older
checkpoints are deleted only after the new one is complete. Loading verifies the hash and
uses `torch.load(weights_only=True)`, so no code from a file is ever executed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from robustdistill import utils
from robustdistill.errors import CheckpointError
from robustdistill.train import faults

MAGIC = b"RDCKPT"
FORMAT_VERSION = 1
_HEADER = len(MAGIC) + 1 + 64
PATTERN = "step-*.ckpt"
TEMP_PATTERN = ".*.tmp-*"


def atomic_write_bytes(path: Path, data: bytes, *, step: int | None = None) -> None:
    """`utils.atomic_write_bytes` with the test-only fault injection (`train/faults.py`) for write `step`."""
    utils.atomic_write_bytes(path, data, before_write=lambda handle: faults.during_checkpoint(step, handle, data))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Serialise `state` (tensors, numbers, strings, lists, dicts) atomically with a hash."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    path = Path(path)
    step = state.get("global_step")
    atomic_write_bytes(path, MAGIC + bytes([FORMAT_VERSION]) + digest + payload, step=step)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint; any damage raises a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    raw = path.read_bytes()
    if len(raw) < _HEADER or not raw.startswith(MAGIC):
        raise CheckpointError(f"checkpoint '{path}' is empty, truncated or not a robustdistill checkpoint")
    version = raw[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint '{path}' has format version {version}; this robustdistill reads version {FORMAT_VERSION}"
        )
    digest, payload = raw[len(MAGIC) + 1 : _HEADER], raw[_HEADER:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CheckpointError(f"checkpoint '{path}' is corrupt: its content hash does not match (truncated or altered)")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"checkpoint '{path}' cannot be read safely: {str(error).splitlines()[0]}") from None


def checkpoint_path(directory: str | Path, global_step: int) -> Path:
    return Path(directory) / f"step-{global_step:09d}.ckpt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in `directory`, newest first."""
    return sorted(Path(directory).glob(PATTERN), reverse=True)


def latest_valid_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies; damaged newer ones are skipped with a warning."""
    for path in list_checkpoints(directory):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as error:
            warnings.warn(f"{error}; falling back to an older checkpoint", stacklevel=2)
    return None


def remove_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporary files a killed writer left behind (never a complete checkpoint)."""
    removed = []
    for tmp in Path(directory).glob(TEMP_PATTERN):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def prune_checkpoints(directory: str | Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints (called after a new one is complete)."""
    for old in list_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
