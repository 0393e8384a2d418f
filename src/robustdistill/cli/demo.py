"""`demo`: the main job offline, from teacher to report."""

from __future__ import annotations

from typing import Annotated

import typer

from robustdistill.cli.common import DataDirOpt, QuietOpt, _heartbeat


def demo(
    size: Annotated[
        str,
        typer.Option(
            "--size", help="tiny (3 to 4 min, numbers meaningless), small (5 to 22 min on 2 CPU cores) or full (hours)."
        ),
    ] = "small",
    run_dir: Annotated[str, typer.Option("--run-dir", help="Where the runs and the report go.")] = "runs/demo",
    data: Annotated[
        str | None,
        typer.Option("--data", help="Dataset (default: fashion-mnist when its files are found, else digits)."),
    ] = None,
    data_dir: DataDirOpt = None,
    train_teacher: Annotated[
        bool,
        typer.Option("--train-teacher", help="Train a teacher instead of using the shipped zoo teacher."),
    ] = False,
    retrain_teacher: Annotated[
        bool, typer.Option("--retrain-teacher", help="Train the teacher again even if an earlier one matches.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of data order, init, subsets and attacks.")] = 0,
    methods: Annotated[
        str | None,
        typer.Option("--methods", help="Students to train, comma-separated (default pgd-at,rslad,paths,gacd)."),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """The main job, offline: teacher, students by several methods, attacks, table and report.

    Timings are in docs/measurements.md; quick try: --size tiny (3 to 4 min on 2 loaded CPU cores).
    """
    from robustdistill.errors import Interrupted

    with _heartbeat(f"demo ({size}): loading PyTorch and robustdistill", enabled=not quiet):
        import torch._dynamo  # noqa: F401  (imported by the first optimiser otherwise, seconds later)

        from robustdistill.demo import run_demo

    try:
        run_demo(
            size=size,
            run_dir=run_dir,
            data=data,
            data_dir=data_dir,
            train_teacher=train_teacher,
            retrain_teacher=retrain_teacher,
            seed=seed,
            quiet=quiet,
            methods=tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None,
        )
    except Interrupted as stop:  # the demo has no --resume: a rerun reuses the finished teacher
        where = str(stop).split(";")[0]
        raise Interrupted(
            f"{where}; run the same demo command again (a finished teacher is reused)", stop.signum
        ) from None
