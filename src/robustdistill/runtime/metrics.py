"""Metrics logs: one JSON object per line (`metrics.jsonl`), plus TensorBoard when installed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _step(line: str) -> float:
    """The `step` of one log line; damaged or empty lines sort after every step (so are dropped)."""
    try:
        record = json.loads(line)
        return float(record.get("step", 0)) if isinstance(record, dict) else math.inf
    except (ValueError, TypeError):
        return math.inf


class MetricsLog:
    """Appends records to `metrics.jsonl`; a resumed run drops records past its checkpoint."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:  # TensorBoard is optional; any import problem just disables it
                self._writer = None

    def truncate_after(self, global_step: int) -> None:
        """Keep only records up to `global_step` (used on resume so no record is duplicated).

        A line a killed process left half written is dropped; the file is replaced atomically.
        """
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text(errors="replace").splitlines() if _step(line) <= global_step]
        from robustdistill.utils import atomic_write_bytes

        atomic_write_bytes(self.path, "".join(f"{line}\n" for line in kept).encode())

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        if self._writer is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self._writer.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip() and _step(line) < math.inf]
