"""Stopping a training run cleanly on Ctrl-C (SIGINT) or SIGTERM.

`stop_requests()` installs handlers for the length of a `with`: the first signal only records
itself, and the loop, after the optimiser step in progress, writes a checkpoint and raises
`Interrupted`; a second signal raises `KeyboardInterrupt` at once (the last checkpoint stays).
Outside the main thread (where handlers cannot be installed) nothing changes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """The first stop signal received (`signum`), or None."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[int, Any] = {sig: signal.signal(sig, request.handle) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
