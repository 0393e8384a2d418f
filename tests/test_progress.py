"""Without a terminal, a progress bar prints a plain line every few seconds, also while no step ends."""

from __future__ import annotations

import io
import time

from rich.console import Console

from robustdistill.runtime import progress


def test_plain_lines_keep_coming_while_one_step_runs(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=False, width=100))
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.2)
    with progress.Progress(enabled=True, total=3, description="teacher cw", unit="forward passes") as bar:
        bar.update(1)
        time.sleep(1.3)  # one long step: no update, yet the log keeps moving
    lines = [line for line in out.getvalue().splitlines() if line.startswith("teacher cw: step 1/3")]
    assert len(lines) >= 3, out.getvalue()
    assert lines[0] == "teacher cw: step 1/3 forward passes"


def test_a_disabled_or_terminal_bar_prints_no_plain_lines(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, force_terminal=False))
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.1)
    with progress.Progress(enabled=False, total=2) as bar:
        bar.update(1)
        time.sleep(0.4)
    assert out.getvalue() == ""
