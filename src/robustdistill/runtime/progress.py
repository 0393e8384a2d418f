"""A `rich` progress bar for training: loss, accuracy and images per second."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

console = Console(stderr=True)
#: without a terminal (a log file, a pipe) a plain line this often replaces the live bar
PLAIN_INTERVAL_S = 5.0


class Progress:
    """Shows steps done, the running loss terms and throughput; silent when disabled."""

    def __init__(self, *, enabled: bool, total: int, done: int = 0, description: str = "train", unit: str = "") -> None:
        self.enabled = enabled
        self.unit = unit
        self.description = description
        self.total = total
        self._last_line = time.monotonic()
        self._status = unit
        self._plain: threading.Thread | None = None
        self._bar: RichProgress | None = None
        if enabled:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=console,
                transient=False,
            )
            self._task = self._bar.add_task(description, total=total, completed=done, status="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.__enter__()
            if not self._bar.console.is_terminal:
                # Logs written to a file get a plain line every so often instead of a live bar, also
                # while one step (a batch under attack, an evaluation) takes longer than that.
                self._stop = threading.Event()
                self._plain = threading.Thread(target=self._plain_lines, daemon=True)
                self._plain.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            if self._plain is not None:
                self._stop.set()
                self._plain.join()
                self._plain = None
            self._bar.__exit__(*exc)

    def _plain_lines(self) -> None:
        while not self._stop.wait(min(0.5, PLAIN_INTERVAL_S / 2)):
            now = time.monotonic()
            if now - self._last_line >= PLAIN_INTERVAL_S and self._bar is not None:
                self._last_line = now
                done = int(self._bar.tasks[0].completed)
                self._bar.console.print(
                    f"{self.description}: step {done}/{self.total} {self._status}".rstrip(), highlight=False
                )

    def update(
        self,
        done: int,
        *,
        epoch: int | None = None,
        epochs: int | None = None,
        rate: float | None = None,
        **terms: float,
    ) -> None:
        """Move the bar to `done` steps; the status shows the epoch, loss/accuracy terms and img/s when given
        (called with `done` alone, the bar moves and keeps the last status)."""
        if self._bar is None:
            return
        if epoch is None and rate is None and not terms:
            status = self._status
        else:
            parts = [self.unit] if self.unit else []
            parts += [f"epoch {epoch}/{epochs}"] if epoch is not None else []
            parts += [f"{k}={v:.3f}" for k, v in terms.items() if k == "loss" or k.startswith("acc")]
            parts += [f"{rate:.0f} img/s"] if rate else []
            status = " ".join(parts)
        self._status = status
        self._bar.update(self._task, completed=done, status=status)

    def note(self, text: str) -> None:
        """A line above the bar (what a long step without bar updates is doing)."""
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
            self._last_line = time.monotonic()

    def log_epoch(self, record: dict[str, Any]) -> None:
        if self._bar is None:
            return
        shown = " ".join(
            f"{k}={v:.4f}"
            for k, v in record.items()
            if isinstance(v, float) and (k.startswith(("train_loss", "eval_")))
        )
        self._bar.console.print(f"epoch {record['epoch']}: {shown}")
