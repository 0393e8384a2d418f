"""Small helpers used across the package: seeding, devices, hashing, atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

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


def state_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes): its identity, whatever file it came from."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_writer(path: str | Path, *, before_write: Callable[[BinaryIO], None] | None = None) -> Iterator[BinaryIO]:
    """Write `path` through a binary handle so that readers see the old file or the new one, never a part.

    The handle is a unique temporary file `.<name>.tmp-<pid>-<random>` in the same directory; when the
    `with` body ends cleanly it is flushed, fsynced and renamed over `path` (`os.replace`), and the
    directory is fsynced where the platform allows it. On any error (raised by the body too) the
    temporary file is removed and `path` is left as it was. `before_write(handle)` runs on the open
    temporary file first (the training loop's fault injection uses it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(temp, "xb") as handle:  # the usual permissions (umask), unlike tempfile.mkstemp's 0600
            if before_write is not None:
                before_write(handle)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where the platform allows it
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def atomic_write_bytes(
    path: str | Path, data: bytes, *, before_write: Callable[[BinaryIO], None] | None = None
) -> None:
    """Write `data` to `path` atomically with `atomic_writer` (the one atomic writer of the package)."""
    with atomic_writer(path, before_write=before_write) as handle:
        handle.write(data)
