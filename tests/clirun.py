"""Running the `robustdistill` command in a separate process, optionally with an injected fault.

`run_cli(args)` forks the test process (everything is already imported, so a run costs a fraction
of a second) and calls `robustdistill.cli.main(args)` in the child; `real=True` starts a fresh
`python -m robustdistill` interpreter instead (seconds, but nothing shared with the tests). Either
way the child is a real process: a fault from `ROBUSTDISTILL_FAULT` (src/robustdistill/train/faults.py)
kills it with SIGKILL, and no `finally`, no `atexit` and no flush runs.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

FAULT_ENV = "ROBUSTDISTILL_FAULT"

# A model and a run small enough for a test: 64 digits, batches of 16 (4 steps an epoch), 2 epochs.
SMALL = [
    "--data", "digits", "--subset", "64", "--batch-size", "16", "--epochs", "2", "--steps", "2",
    "--model", "smallcnn", "model_opts.width=0.25", "model_opts.hidden=16", "model_opts.dropout=0",
    "eval_every=0", "deterministic=true", "--seed", "1", "--lr", "0.05", "--quiet",
]  # fmt: skip


@dataclass
class Outcome:
    code: int | None  # exit status, None when killed by a signal
    signal: int | None  # the signal that killed the process
    stderr: str

    @property
    def killed(self) -> bool:
        return self.signal == signal.SIGKILL

    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _child(args: list[str], err_path: str, fault: str | None) -> int:
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    stream = os.fdopen(fd, "w", buffering=1)
    sys.stdout = sys.stderr = stream
    # print warnings the way a fresh interpreter does (pytest's recorder is inherited otherwise)
    warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: stream.write(
        warnings.formatwarning(message, category, filename, lineno, line)
    )
    if fault:
        os.environ[FAULT_ENV] = fault
    else:
        os.environ.pop(FAULT_ENV, None)
    # unpredictable generators, as in a fresh interpreter: randomness not drawn from --seed shows up
    random.seed()
    np.random.seed()
    torch.seed()
    from robustdistill import cli

    try:
        cli.main(args)
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # a bug in the test harness or an escaped exception: show it
        traceback.print_exc()
        return 99
    finally:
        stream.flush()


class Running:
    """A `robustdistill` command started by `start_cli`: its `pid`, `signal(sig)` and `wait()`."""

    def __init__(self, args: list[str], *, fault: str | None, real: bool) -> None:
        self.args = args
        self._log = tempfile.NamedTemporaryFile("r", suffix=".log")  # noqa: SIM115 (closed by wait)
        self._popen: subprocess.Popen[bytes] | None = None
        if real:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
            env.pop(FAULT_ENV, None)
            if fault:
                env[FAULT_ENV] = fault
            with open(self._log.name, "wb") as out:
                self._popen = subprocess.Popen(
                    [sys.executable, "-m", "robustdistill", *args], env=env, stdout=out, stderr=subprocess.STDOUT
                )
            self.pid = self._popen.pid
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            code = 99
            try:
                code = _child(args, self._log.name, fault)
            finally:
                os._exit(code)
        self.pid = pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 240) -> Outcome:
        deadline = time.monotonic() + timeout
        while True:
            if self._popen is not None:
                code = self._popen.poll()
                if code is not None:
                    status = (None, -code) if code < 0 else (code, None)
                    break
            else:
                done_pid, raw = os.waitpid(self.pid, os.WNOHANG)
                if done_pid:
                    status = (None, os.WTERMSIG(raw)) if os.WIFSIGNALED(raw) else (os.WEXITSTATUS(raw), None)
                    break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise TimeoutError(f"robustdistill {' '.join(self.args)} ran longer than {timeout} s")
            time.sleep(0.01)
        text = Path(self._log.name).read_text()
        self._log.close()
        return Outcome(status[0], status[1], text)


def start_cli(args: list[str], *, fault: str | None = None, real: bool = False) -> Running:
    """Start `robustdistill ARGS` in a child process (forked, or a fresh interpreter with `real`); do not wait."""
    return Running(args, fault=fault, real=real)


def run_cli(args: list[str], *, fault: str | None = None, real: bool = False, timeout: float = 240) -> Outcome:
    """Run `robustdistill ARGS` in a child process and wait for it."""
    return start_cli(args, fault=fault, real=real).wait(timeout)


_WARM: list[bool] = []


def warm_up() -> None:
    """Import in the test process what a run imports lazily, so forked runs do not each pay for it."""
    if _WARM:
        return
    import sklearn.datasets  # noqa: F401  (the digits reader)
    import torch._inductor.config  # noqa: F401  (imported by torch.use_deterministic_algorithms)

    import robustdistill.evaluate
    import robustdistill.runs
    import robustdistill.train  # noqa: F401
    from robustdistill import data

    data.load("digits", "train")
    _WARM.append(True)


def main_exit_code(args: list[str]) -> int:
    """Run `robustdistill.cli.main(args)` in this process; its exit status.

    0 when `main` returns, else the code of the `SystemExit` it raised (1 for a message instead of a
    code); any other exception propagates and fails the test.
    """
    from robustdistill import cli

    try:
        cli.main(args)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def assert_ok(outcome: Outcome) -> None:
    assert outcome.code == 0 and outcome.signal is None, outcome.stderr


def assert_same_weights(a: Path, b: Path) -> None:
    """The two weights files hold the same tensors, bit for bit."""
    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for key in first:
        assert first[key].dtype == second[key].dtype and first[key].shape == second[key].shape, key
        assert first[key].numpy().tobytes() == second[key].numpy().tobytes(), f"{key} differs"
