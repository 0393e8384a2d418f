"""One run per run directory: an exclusive `flock` on `<run_dir>/.robustdistill.lock`.

The lock file holds the pid of its holder. The kernel releases a `flock` when its holder exits,
however it dies, so a lock file left behind by a killed process is stale by construction: the
next run takes it over (writes its own pid) without a word, and removes it when done. A clean
release deletes the file while still holding the lock, and an acquirer checks that the file it
locked is still the one on disk, so two processes can never both believe they hold it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from robustdistill.errors import ConfigError

LOCK_NAME = ".robustdistill.lock"


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


class RunDirLock:
    """An exclusive lock on one run directory; `acquire` refuses at once if another process holds it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise ConfigError(
                    f"cannot lock the run directory '{self.run_dir}': {error.strerror or error}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise ConfigError(
                    f"run directory '{self.run_dir}' is in use by another robustdistill process "
                    f"(pid {holder if holder is not None else 'unknown'}); wait for it to finish "
                    "or choose another --run-dir"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released (and deleted) between our open and our flock: try the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


@contextlib.contextmanager
def locked(run_dir: str | Path) -> Iterator[RunDirLock]:
    """Hold the lock of `run_dir` (created if needed) for the body of a `with`."""
    lock = RunDirLock(run_dir).acquire()
    try:
        yield lock
    finally:
        lock.release()
