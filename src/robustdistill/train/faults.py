"""Test-only fault injection: kill the process with SIGKILL at a chosen point of a run.

The crash-and-resume tests (tests/test_crash_resume.py) set the environment variable
`ROBUSTDISTILL_FAULT` to one or more comma-separated faults:

- `kill-after-step:N`: SIGKILL right after optimiser step N (global, 1-based), before any
  checkpoint of that step is written;
- `kill-during-checkpoint:N`: SIGKILL while the checkpoint of step N is half written to its
  temporary file (the rename never happens).

Without the variable (always, outside tests) every hook is a no-op. The variable is read at
each call, so a forked test process may set it after import.
"""

from __future__ import annotations

import os
import signal
from typing import BinaryIO

ENV = "ROBUSTDISTILL_FAULT"


def _armed(kind: str, step: int | None) -> bool:
    spec = os.environ.get(ENV)
    if not spec or step is None:
        return False
    return f"{kind}:{step}" in (item.strip() for item in spec.split(","))


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after_step(step: int) -> None:
    """Called by the training loop after each optimiser step."""
    if _armed("kill-after-step", step):
        _kill()


def during_checkpoint(step: int | None, handle: BinaryIO, data: bytes) -> None:
    """Called by the checkpoint writer before it writes `data` to the temporary file `handle`."""
    if _armed("kill-during-checkpoint", step):
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
        _kill()
