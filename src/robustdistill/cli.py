"""The `robustdistill` command.

Every sub-command takes `--config FILE.yaml` plus `key=value` arguments or flags; flags win
over `key=value`, which win over the file. User errors print one line and exit non-zero; `--debug`
shows the traceback.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import robustdistill
from robustdistill.config import RunConfig
from robustdistill.errors import RobustDistillError


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


def _method_opts(values: list[str] | None) -> dict[str, Any]:
    from robustdistill.config import parse_value
    from robustdistill.errors import ConfigError

    options: dict[str, Any] = {}
    for item in values or []:
        if "=" not in item:
            raise ConfigError(f"--method-opt '{item}' is not of the form key=value")
        key, text = item.split("=", 1)
        options[key.strip()] = parse_value(text)
    return options


def _train(command: str, config: Path | None, overrides: list[str] | None, flags: dict[str, Any], quiet: bool) -> None:
    from robustdistill.config import load_config
    from robustdistill.runs import train_from_config

    resume = bool(flags.pop("resume"))
    train_from_config(command, load_config(config, overrides, flags), resume=resume, quiet=quiet)


@app.command("train-teacher", cls=_Command)
def train_teacher(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    method: MethodOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    eps: EpsOpt = None,
    steps: StepsOpt = None,
    subset: SubsetOpt = None,
    val_size: ValSizeOpt = None,
    test_subset: TestSubsetOpt = None,
    seed: SeedOpt = None,
    run_dir: RunDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    method_opt: MethodOptsOpt = None,
    device: DeviceOpt = None,
    download: DownloadOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Adversarially train a model (standard, pgd-at, trades or mart).

    Quick try: --subset 512 --epochs 1 (77 s measured on 2 loaded CPU cores, start-up included).
    """
    flags = dict(locals())
    for key in ("overrides", "config", "quiet", "method_opt"):
        flags.pop(key)
    flags["method_opts"] = _method_opts(method_opt) or None
    flags["overwrite"] = overwrite or None
    flags["download"] = download or None
    _train("train-teacher", config, overrides, flags, quiet)


@app.command("distill", cls=_Command)
def distill(
    overrides: Overrides = None,
    config: ConfigOpt = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Teacher run directory, weights file or zoo:NAME (see `robustdistill zoo`; "
            "default: the --config file's).",
        ),
    ] = None,
    natural_teacher: Annotated[
        str | None,
        typer.Option("--natural-teacher", help="Natural (non-robust) teacher, for mtard (default: none)."),
    ] = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    model: ModelOpt = None,
    method: MethodOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    eps: EpsOpt = None,
    steps: StepsOpt = None,
    subset: SubsetOpt = None,
    val_size: ValSizeOpt = None,
    test_subset: TestSubsetOpt = None,
    seed: SeedOpt = None,
    run_dir: RunDirOpt = None,
    resume: ResumeOpt = False,
    overwrite: OverwriteOpt = False,
    method_opt: MethodOptsOpt = None,
    device: DeviceOpt = None,
    download: DownloadOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a student from a teacher (kd, ard, iad, rslad, adaad, mtard, paths, gacd, igdm, saad, dgad, ...).

    The method defaults to rslad. Quick try: --subset 512 --epochs 1 (77 s measured on 2 loaded CPU
    cores, start-up included).
    """
    flags = dict(locals())
    for key in ("overrides", "config", "quiet", "method_opt"):
        flags.pop(key)
    flags["method_opts"] = _method_opts(method_opt) or None
    flags["overwrite"] = overwrite or None
    flags["download"] = download or None
    if flags.get("method") is None and not config and not any((o or "").startswith("method=") for o in overrides or []):
        flags["method"] = "rslad"
    _train("distill", config, overrides, flags, quiet)


@app.command("evaluate", cls=_Command)
def evaluate(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Run directory, weights file or zoo:NAME.")],
    data: Annotated[str, typer.Option("--data", help="Dataset (see `robustdistill datasets`).")] = "fashion-mnist",
    data_dir: DataDirOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate on: test or train.")] = "test",
    attacks: Annotated[str, typer.Option("--attacks", help="Comma-separated attacks: " + ATTACK_NAMES + ".")] = (
        "clean,fgsm,pgd-20,cw,autoattack"
    ),
    n: Annotated[
        int | None,
        typer.Option("--n", help="Evaluate on a class-balanced subset of N images (default: the whole split)."),
    ] = None,
    eps: EpsOpt = None,
    norm: Annotated[str, typer.Option("--norm", help="Threat model: linf or l2.")] = "linf",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per attacked batch.")] = 256,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the subset and of the attacks' random starts.")] = 0,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the result record here (default: not written).")
    ] = None,
    linear_probe: Annotated[
        bool, typer.Option("--linear-probe", help="Also fit a linear probe on frozen features (cross-task students).")
    ] = False,
    structure: Annotated[
        str | None,
        typer.Option(
            "--structure",
            help="Teacher checkpoint: report linear CKA and correlation distance to it (default: not computed).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --json file that is not a result record.")
    ] = False,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run the attack suite on a checkpoint and print (and optionally save) the result record.

    Standard AutoAttack is the slow part (9 min measured for 100 Fashion-MNIST images on 2 CPU cores);
    quick try: --n 64 --attacks clean,pgd-20,apgd-ce+apgd-t.
    """
    from robustdistill import data as data_lib
    from robustdistill import runs
    from robustdistill.config import check_eps, default_eps, warn_large_eps
    from robustdistill.errors import ConfigError
    from robustdistill.evaluate import print_table, run, write_record
    from robustdistill.evaluate.record import check_record_path
    from robustdistill.utils import file_sha256

    if n is not None and n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--seed must be in [0, 2**32), got {seed}")
    eps_value = check_eps(eps, norm) if eps is not None else default_eps(data)
    warn_large_eps(eps_value, norm)
    model, weights = runs.load_model(str(_existing(checkpoint, "--checkpoint")))
    if json_path is not None:  # results never replace what this command reads
        inputs = runs.input_files(weights)
        if structure:
            inputs += runs.input_files(runs.resolve_weights(structure))
        inputs += [Path(f) for part in (split, "train") for f in data_lib.source_files(data, part, data_dir)]
        check_record_path(json_path, inputs, overwrite=overwrite)
    dataset = data_lib.load(data, split, data_dir=data_dir)
    runs.check_input_channels(model, dataset, "checkpoint")
    if model.spec["num_classes"] != dataset.num_classes:
        raise ConfigError(
            f"the checkpoint has {model.spec['num_classes']} classes but '{data}' has {dataset.num_classes}"
        )
    with runs.lock_if_run_dir(json_path.parent if json_path is not None else None):  # one writer per run dir
        record = run(
            model,
            dataset,
            attacks=attacks,
            eps=eps_value,
            norm=norm,
            n=n,
            batch_size=batch_size,
            seed=seed,
            device=device,
            progress=not quiet,
            label=Path(checkpoint).name,
        )
        record["checkpoint"] = str(weights)
        record["checkpoint_sha256"] = file_sha256(weights)
        record["model"] = model.spec
        title = f"accuracy (%) on {record['n_examples']} {data} {split} images, eps {eps_value:.4g}"
        print_table({str(checkpoint): record}, title=title)
        if linear_probe:
            from robustdistill.evaluate.probe import linear_probe as fit_probe

            train = data_lib.load(data, "train", data_dir=data_dir)
            probe = fit_probe(
                model,
                train,
                dataset,
                attack="pgd-20",
                eps=eps_value,
                n_train=min(len(train), 10000),
                n_test=n,
                seed=seed,
            )
            record["linear_probe"] = probe
            console.print(
                f"linear probe on frozen features: clean {100 * probe['accuracy']:.2f}%, "
                f"PGD-20 {100 * probe['robust_accuracy']:.2f}% "
                f"({probe['n_train']} train / {probe['n_test']} test images)"
            )
        if structure:
            import torch

            from robustdistill.attacks import PGD
            from robustdistill.data import subset
            from robustdistill.evaluate.structure import structure_report

            teacher = runs.load_model(structure)[0].eval()
            sample = subset(dataset, min(n or 1000, 1000, len(dataset)), seed=seed)
            x = sample.images.float() / 255
            on = next(model.parameters()).device  # where `run` left the student
            torch.manual_seed(seed)
            x_adv = torch.cat(
                [
                    PGD(model, eps=eps_value, steps=20)(xb.to(on), yb.to(on)).cpu()
                    for xb, yb in zip(x.split(256), sample.labels.split(256), strict=True)
                ]
            )
            record["structure"] = structure_report(teacher, model.eval(), x, x_adv)
            console.print("structure: " + ", ".join(f"{k}={v:.4f}" for k, v in record["structure"].items() if k != "n"))
        if json_path is not None:
            try:
                write_record(record, json_path)
            except OSError as error:
                raise ConfigError(f"cannot write --json '{json_path}': {error.strerror or error}") from None
            err_console.print(f"record written to {json_path}")


@app.command("report", cls=_Command)
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory or a collection of runs (e.g. runs/demo).", show_default=False)
    ],
    data_dir: DataDirOpt = None,
    sweep_n: Annotated[int, typer.Option("--sweep-n", help="Test images for the eps sweep (0: skip it).")] = 500,
    sweep_points: Annotated[
        int, typer.Option("--sweep-points", help="Eps values from 0 to 2 eps in the sweep (0: skip it).")
    ] = 9,
    examples: Annotated[int, typer.Option("--examples", help="Images in the adversarial grid (0: skip it).")] = 8,
    device: DeviceOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Write report.md and PNG figures (curves, eps sweep, paths weights, adversarial examples).

    The eps sweep is the slow part (minutes per model on a CPU); quick try: --sweep-n 64 --sweep-points 5.
    """
    from robustdistill.errors import ConfigError
    from robustdistill.evaluate.report import write_report
    from robustdistill.lock import locked

    if not _existing(run_dir, "run directory").is_dir():
        raise ConfigError(f"run directory '{run_dir}' is a file; pass a run directory or a directory of runs")
    with locked(run_dir):  # not while a run writes into it
        path = write_report(
            run_dir,
            data_dir=data_dir,
            sweep_n=sweep_n,
            sweep_points=sweep_points,
            examples=examples,
            device=device,
            progress=not quiet,
        )
    console.print(f"report written to {path}")


@app.command("demo", cls=_Command)
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


@app.command("export", cls=_Command)
def export(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Run directory or weights file of the model.")],
    out: Annotated[Path, typer.Option("--out", help="File to write, e.g. student.pt, student.pt2, student.onnx.")],
    export_format: Annotated[
        str,
        typer.Option("--format", help="torchscript (torch.jit), torch-export (torch.export) or onnx (needs [onnx])."),
    ] = "torchscript",
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape",
            help="One image as CxHxW, e.g. 3x32x32 (default: the shape of the dataset the run was trained on).",
        ),
    ] = None,
) -> None:
    """Export a model for deployment (images in [0, 1] in, logits out, any batch size); takes seconds."""
    from robustdistill import data as data_lib
    from robustdistill import models, runs
    from robustdistill.errors import ConfigError

    model, weights = runs.load_model(str(_existing(checkpoint, "--checkpoint")))
    if input_shape is None:
        name = runs.trained_on(weights)
        shape = data_lib.info(name)["shape"] if name else None
        if not shape:
            raise ConfigError("cannot tell the input shape from the run: pass --input-shape CxHxW")
    else:
        try:
            shape = tuple(int(part) for part in input_shape.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--input-shape must look like 3x32x32, got '{input_shape}'") from None
    path = models.export(model.cpu(), out, input_shape=shape, format=export_format)
    console.print(f"{export_format} model written to {path}", highlight=False)


@app.command("models", cls=_Command)
def list_models() -> None:
    """List the registered architectures."""
    from robustdistill import models

    table = Table(title="models")
    table.add_column("name")
    for name in models.available():
        table.add_row(name)
    console.print(table)
    console.print("WideResNets of any depth/width: wrn-D-K with (D-4) divisible by 6, e.g. wrn-16-4.")


@app.command("zoo", cls=_Command)
def list_zoo() -> None:
    """List the shipped robust teachers (use them as --teacher zoo:NAME) with their measured accuracies."""
    from robustdistill.models import zoo

    table = Table(title="model zoo (accuracy %, test images in brackets)")
    for column in ("name", "arch", "data", "eps", "clean", "PGD-20", "AutoAttack", "sha256"):
        table.add_column(column)
    for name in zoo.names():
        entry = zoo.record(name)
        cells: dict[str, str] = {}
        for evaluation in entry.get("evaluations", []):
            for attack, accuracy in evaluation["accuracy"].items():
                cells.setdefault(attack, f"{100 * accuracy:.2f} ({evaluation['n_examples']})")
        table.add_row(
            f"zoo:{name}",
            entry["arch"],
            entry["dataset"],
            f"{entry['eps']:g}",
            *(cells.get(attack, "-") for attack in ("clean", "pgd-20", "autoattack")),
            entry["sha256"][:12],
        )
    console.print(table)


@app.command("datasets", cls=_Command)
def list_datasets() -> None:
    """List the datasets and the files each one expects."""
    from robustdistill import data

    table = Table(title="datasets")
    for column in ("name", "classes", "shape", "files"):
        table.add_column(column)
    for name in data.available():
        meta = data.info(name)
        table.add_row(
            name,
            str(meta["num_classes"] or "any"),
            "x".join(str(s) for s in meta["shape"] or ()) or "any",
            meta["files"].get("train", "")[:80],
        )
    console.print(table)


@app.command("methods", cls=_Command)
def list_methods(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A method: show its options with their defaults (default: list every method).", show_default=False
        ),
    ] = None,
) -> None:
    """List the training and distillation methods, or one method's options and defaults."""
    from rich.markup import escape

    from robustdistill import methods

    if name is not None:
        spec = methods.spec(name)
        table = Table(title=f"{spec.name}: options (--method-opt KEY=VALUE)", caption=spec.summary)
        for column in ("option", "default", "type", "allowed", "help"):
            table.add_column(column)
        for row in methods.option_table(name):
            default = f"{row.default:.4g}" if isinstance(row.default, float) else repr(row.default)
            table.add_row(row.name, escape(default), escape(row.type), escape(row.allowed), escape(row.help))
        console.print(table)
        return
    table = Table(title="methods", caption="`robustdistill methods NAME` shows a method's defaults")
    for column in ("name", "teacher", "options"):
        table.add_column(column)
    for method in methods.available():
        spec = methods.spec(method)
        needs = "robust + natural" if spec.needs_natural_teacher else ("yes" if spec.needs_teacher else "no")
        table.add_row(method, needs, ", ".join(spec.options.keys()))
    console.print(table)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _print_error(text: str) -> None:
    # markup=False: a message holding "[...]" (a path, a list value) is printed as it is
    err_console.print(f"error: {_one_line(text)}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit."""
    args = sys.argv[1:] if argv is None else argv
    _STATE["debug"] = "--debug" in args
    previous_format = warnings.formatwarning
    with warnings.catch_warnings():  # filters and format are restored afterwards (main may run in-process)
        warnings.filterwarnings("default")
        warnings.formatwarning = lambda message, category, *rest: f"warning: {_one_line(message)}\n"  # type: ignore[assignment]
        try:
            _run(args)
        finally:
            warnings.formatwarning = previous_format


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """`name` from click and from the copy of click that typer >= 0.22 vendors (`typer._click`)."""
    import importlib

    found: list[type[BaseException]] = []
    for module in ("click.exceptions", "typer.exceptions", "typer._click.exceptions"):
        with contextlib.suppress(ImportError):
            cls = getattr(importlib.import_module(module), name, None)
            if isinstance(cls, type) and cls not in found:
                found.append(cls)
    return tuple(found)


_EXIT, _ABORT, _USAGE = _click_classes("Exit"), _click_classes("Abort"), _click_classes("ClickException")


def _run(args: list[str]) -> None:
    from robustdistill.errors import Interrupted

    try:
        # standalone_mode=False makes click *return* the code of a `typer.Exit` instead of exiting
        code = app(args=args, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except _EXIT as stop:
        sys.exit(getattr(stop, "exit_code", 0))
    except _ABORT:
        err_console.print("aborted", markup=False)
        sys.exit(130)
    except _USAGE as error:
        message = error.format_message()  # type: ignore[attr-defined]
        if type(error).__name__ == "NoArgsIsHelpError":  # a bare `robustdistill`: the help, not an error
            if message.strip():
                console.print(message, markup=False, highlight=False)
            sys.exit(0)
        _print_error(message)
        sys.exit(2)
    except Interrupted as stop:
        err_console.print(str(stop), markup=False, highlight=False)
        sys.exit(stop.exit_code)
    except RobustDistillError as error:
        if _STATE["debug"]:
            traceback.print_exc()
        _print_error(str(error))
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; resume with --resume", markup=False)
        sys.exit(130)
    except MemoryError:
        if _STATE["debug"]:
            traceback.print_exc()
        _print_error("out of memory; lower --batch-size, use a smaller --subset or model, or free memory")
        sys.exit(1)
    except OSError as error:  # a file the run needed could not be read or written: name it
        if _STATE["debug"]:
            traceback.print_exc()
        where = f" '{error.filename}'" if error.filename else ""
        _print_error(f"cannot access{where}: {error.strerror or error}")
        sys.exit(1)
    except Exception as error:  # an unexpected failure: still one line unless --debug
        if _STATE["debug"]:
            traceback.print_exc()
        message = str(error).splitlines()[0] if str(error) else ""
        _print_error(f"{type(error).__name__}: {message} (run with --debug for the traceback)")
        sys.exit(1)
