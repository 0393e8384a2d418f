"""The `robustdistill` Typer app, its consoles, the options several commands share, and their helpers."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

import robustdistill
from robustdistill.config import RunConfig


class _FlagsWithoutType:
    """Help pages without a `<bool>` type after flags (typer >= 0.22 prints a type for every option)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsWithoutType, typer.core.TyperCommand):
    pass


class _Group(_FlagsWithoutType, typer.core.TyperGroup):
    pass


app = typer.Typer(
    name="robustdistill",
    help="Adversarially robust knowledge distillation: train, distill, attack, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Group,
)
console = Console()
err_console = Console(stderr=True)
_STATE = {"debug": False}
_DEFAULTS = RunConfig.model_fields


def _default(key: str) -> str:
    """`(default: the --config file's value, else X)` for a training option that overrides the config."""
    return f"(default: the --config file's value, else {_DEFAULTS[key].default})"


#: the attack names of `robustdistill evaluate` (tests check it against attacks.available())
ATTACK_NAMES = (
    "clean, fgsm, pgd (= pgd-20), pgd-N, cw (= cw-30), cw-N, autoattack (standard), autoattack-plus, "
    "and AutoAttack's own attacks apgd-ce, apgd-t, apgd-dlr, fab, fab-t, square, also joined with '+' "
    "(apgd-ce+apgd-t: a quicker substitute for standard AutoAttack)"
)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML file with configuration keys (default: none, built-in defaults).")
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="key=value configuration overrides, e.g. eval_n=200 (default: none).", show_default=False),
]
DataOpt = Annotated[
    str | None, typer.Option("--data", help=f"Dataset (see `robustdistill datasets`) {_default('data')}.")
]
DataDirOpt = Annotated[
    str | None, typer.Option("--data-dir", help="Where the dataset files are (default: the usual locations, see docs).")
]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help=f"Architecture (see `robustdistill models`) {_default('model')}.")
]
MethodOpt = Annotated[
    str | None, typer.Option("--method", help="Objective (see `robustdistill methods`) " + _default("method") + ".")
]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", help=f"Training epochs {_default('epochs')}.")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help=f"Images per step {_default('batch_size')}.")]
LrOpt = Annotated[float | None, typer.Option("--lr", help=f"Peak learning rate of SGD {_default('lr')}.")]
EpsOpt = Annotated[
    float | None,
    typer.Option("--eps", help="Perturbation budget (default: 0.1 on MNIST-style data, else 8/255)."),
]
StepsOpt = Annotated[int | None, typer.Option("--steps", help=f"PGD steps of the training attack {_default('steps')}.")]
SubsetOpt = Annotated[
    int | None,
    typer.Option("--subset", help="Train on a fixed class-balanced subset of N images (default: the whole set)."),
]
ValSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--val-size",
        help="Validation images held out of the training split for the per-epoch evaluation "
        "(default: 10 % of it, at most 5000; 0: none).",
    ),
]
TestSubsetOpt = Annotated[
    int | None,
    typer.Option("--test-subset", help="Evaluate on a class-balanced subset of N test images (default: all)."),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help=f"Seed of data order, init and attacks {_default('seed')}.")
]
RunDirOpt = Annotated[str | None, typer.Option("--run-dir", help="Run directory (default: runs/<name>).")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest valid checkpoint.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace the results of an existing run directory.")]
MethodOptsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--method-opt",
        help="Method option key=value, repeatable (default: the method's; see `robustdistill methods NAME`).",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N (default: auto, CUDA when available).")
]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download missing dataset files (needs network).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars or progress lines.")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            torch_version = version("torch")
        except PackageNotFoundError:
            torch_version = "not installed"
        console.print(f"robustdistill {robustdistill.__version__} (torch {torch_version})", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    _STATE["debug"] = debug


@contextlib.contextmanager
def _heartbeat(text: str, *, enabled: bool, every: float = 5.0) -> Iterator[None]:
    """Print `text`, then `text (N s)` every `every` seconds until the block ends: for a step that cannot
    report progress itself (importing PyTorch takes seconds, more on a loaded machine)."""
    if not enabled:
        yield
        return
    err_console.print(text, highlight=False)
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            err_console.print(f"{text} ({time.monotonic() - start:.0f} s)", highlight=False)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _existing(path: str | Path, what: str) -> Path:
    """`path` when it exists; else a ConfigError naming the closest entries of its parent directory."""
    import difflib

    from robustdistill.errors import ConfigError
    from robustdistill.models import zoo

    path = zoo.resolve(path)
    if path.exists():
        return path
    parent = path.parent
    siblings = [p.name for p in parent.iterdir()] if parent.is_dir() else []
    close = difflib.get_close_matches(path.name, siblings, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(str(parent / c)) for c in close)}?" if close else ""
    where = "" if close or not parent.is_dir() else f" ({parent} holds {', '.join(sorted(siblings)[:8]) or 'nothing'})"
    raise ConfigError(f"{what} '{path}' does not exist{hint}{where}")
