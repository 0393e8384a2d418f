"""The eps-sweep cache of a report (`sweep.json`): a sweep is reused while its settings and weights are unchanged.

An entry is keyed on the sweep settings and the weights file's name, size and mtime; when the file's
stat changed but its tensors did not (the same weights saved again), the digest of its tensors
(`weights_digest`) still matches and the entry is reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from robustdistill.evaluate.discovery import Run, read_json
from robustdistill.evaluate.record import write_record
from robustdistill.utils import file_sha256

SWEEP_CACHE = "sweep.json"
CACHE_VERSION = 1


def sweep_key(run: Run, settings: dict[str, Any]) -> dict[str, Any]:
    """The cache key of the run's sweep: its weights file's name, size and mtime, and the sweep settings."""
    assert run.weights is not None
    stat = run.weights.stat()
    return {"weights": run.weights.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **settings}


def weights_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a safetensors file's tensors: its header with sorted keys, then the data bytes.

    Unlike the hash of the file, it does not change when the same weights are saved again (the
    safetensors writer does not keep the order of metadata keys). Other files: the file's SHA-256.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        header = None
        if 0 < size < 100_000_000:
            try:
                header = json.loads(handle.read(size))
            except (UnicodeDecodeError, json.JSONDecodeError):
                header = None
        if isinstance(header, dict):
            digest.update(json.dumps(header, sort_keys=True).encode())
        else:
            return file_sha256(path)
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_cache(path: Path) -> dict[str, Any]:
    """The entries of a cache file by run label ({} when it is missing, unreadable or of another version)."""
    cache = read_json(path)
    if not cache or cache.get("version") != CACHE_VERSION or not isinstance(cache.get("runs"), dict):
        return {}
    return cache["runs"]


def cached_sweep(entry: Any, key: dict[str, Any], weights: Path) -> dict[str, Any] | None:
    """The cached record when the settings match and the weights are unchanged (same stat, or same hash)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
        return None
    old = entry.get("key", {})
    fixed = [k for k in key if k not in ("size", "mtime_ns")]
    if any(old.get(k) != key[k] for k in fixed):
        return None
    if old.get("size") == key["size"] and old.get("mtime_ns") == key["mtime_ns"]:
        return entry["record"]
    if old.get("size") == key["size"] and old.get("digest") and old["digest"] == weights_digest(weights):
        return entry["record"]
    return None


def write_cache(path: Path, entries: dict[str, Any]) -> None:
    """Write the cache file: its version and one `{key, record}` entry per run label."""
    write_record({"version": CACHE_VERSION, "runs": entries}, path)
