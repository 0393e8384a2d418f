"""`robustdistill demo`: the main job end to end, offline.

Take the shipped robust teacher (`zoo:fashion-mnist-pgd-at`; `--train-teacher` trains one with
PGD-AT instead, as the demo must on data without a zoo teacher), distil a 16x cheaper student with
several methods (plus the same student trained with PGD-AT alone as the no-teacher baseline),
evaluate every model under attack, print the comparison table and write `report.md` with figures.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from robustdistill import data as data_lib
from robustdistill import models
from robustdistill.config import load_config
from robustdistill.errors import ConfigError, DataError
from robustdistill.evaluate import attack_suite, print_table, write_record
from robustdistill.lock import locked
from robustdistill.runs import train_from_config

console = Console(stderr=True)

TEACHER = {"model": "smallcnn", "model_opts": {}}
STUDENT = {"model": "lenet-small", "model_opts": {}}
STUDENT_METHODS = ("pgd-at", "rslad", "paths", "gacd")
#: Method options that differ from the defaults. gacd's default `nce` estimator (CRD's fixed-Z NCE
#: with K = 4096 negatives) kills the BN-free SmallCNN in the first epochs on a few thousand images
#: (its negatives' scores outgrow the Z estimated on the random memory; see docs/methods/gacd.md),
#: so the demo uses the in-batch `infonce` estimator.
METHOD_OPTS: dict[str, dict[str, Any]] = {"gacd": {"estimator": "infonce"}}
#: Learning rates that differ from the demo's 0.05: gacd's contrastive loss collapsed `lenet-small`
#: to chance at 0.05 (3000 images, 4 epochs); at 0.01 it reached 48.5 % clean on the validation split.
METHOD_LR: dict[str, float] = {"gacd": 0.01}


@dataclass(frozen=True)
class DemoSize:
    """How much work the demo does: training subset, epochs, attack steps, evaluation subsets."""

    subset: int | None
    teacher_epochs: int
    epochs: int
    steps: int
    batch_size: int
    eval_n: int
    #: images of the per-epoch clean / PGD-20 evaluation that draws the training curves
    curve_n: int
    autoattack_n: int
    #: "autoattack" (standard: APGD-CE, APGD-T, FAB-T, Square) or a quicker custom subset of its attacks
    autoattack: str
    sweep_n: int
    sweep_points: int
    methods: tuple[str, ...] = STUDENT_METHODS
    extra: dict[str, Any] = field(default_factory=dict)


SIZES = {
    # CI smoke size: seconds, numbers meaningless.
    "tiny": DemoSize(
        subset=256,
        teacher_epochs=1,
        epochs=1,
        steps=2,
        batch_size=64,
        eval_n=64,
        curve_n=64,
        autoattack_n=16,
        autoattack="apgd-ce",
        sweep_n=64,
        sweep_points=3,
    ),
    # The default: under 10 minutes on 2 CPU cores (the measured time is in docs/measurements.md).
    "small": DemoSize(
        subset=3000,
        teacher_epochs=4,
        epochs=4,
        steps=5,
        batch_size=128,
        eval_n=500,
        curve_n=200,
        autoattack_n=100,
        autoattack="apgd-ce+apgd-t",
        sweep_n=200,
        sweep_points=7,
    ),
    # The benchmark-sized configuration: the full training set.
    "full": DemoSize(
        subset=None,
        teacher_epochs=10,
        epochs=10,
        steps=10,
        batch_size=128,
        eval_n=2000,
        curve_n=500,
        autoattack_n=1000,
        autoattack="autoattack",
        sweep_n=1000,
        sweep_points=9,
    ),
}


def pick_dataset(requested: str | None, data_dir: str | None) -> str:
    """Fashion-MNIST when its files are present, else scikit-learn's digits (said out loud)."""
    if requested:
        return requested
    try:
        data_lib.load("fashion-mnist", "test", data_dir=data_dir)
        return "fashion-mnist"
    except DataError:
        console.print(
            "[yellow]Fashion-MNIST not found (install the Debian package dataset-fashion-mnist or pass "
            "--data-dir); the demo uses scikit-learn's digits instead.[/]"
        )
        return "digits"


def _base(size: DemoSize, dataset: str, data_dir: str | None, seed: int) -> dict[str, Any]:
    return {
        "data": dataset,
        "data_dir": data_dir,
        "subset": size.subset,
        "test_subset": size.eval_n,
        "steps": size.steps,
        "batch_size": size.batch_size,
        "lr": 0.05,
        "seed": seed,
        "eval_attacks": ["clean", "pgd-20"],
        "eval_n": size.curve_n,
        **size.extra,
    }


def copy_zoo_teacher(name: str, teacher_dir: Path) -> None:
    """Put the zoo entry's model, spec and training config in the demo's teacher folder (for the report)."""
    teacher_dir.mkdir(parents=True, exist_ok=True)
    source = models.zoo.entry_dir(name)
    for file in ("model.safetensors", "model.json", "config.yaml"):
        shutil.copyfile(source / file, teacher_dir / file)


def _teacher_is_reusable(run_dir: Path, wanted: dict[str, Any]) -> bool:
    config_path = run_dir / "config.yaml"
    if not (run_dir / "model.safetensors").exists() or not config_path.exists():
        return False
    saved = yaml.safe_load(config_path.read_text()) or {}
    written_by_the_run = ("run_dir", "overwrite", "data_files", "method_options")
    return all(saved.get(key) == value for key, value in wanted.items() if key not in written_by_the_run)


def evaluate_run(
    run_dir: Path,
    dataset: str,
    data_dir: str | None,
    size: DemoSize,
    seed: int,
    *,
    label: str = "",
    quiet: bool = False,
) -> dict[str, Any]:
    """Clean, PGD-20 and CW-inf on `eval_n` images, AutoAttack (or its gradient-based part) on
    `autoattack_n`; writes results.json. Square's 5000 queries per image make the standard version
    slow on a CPU, so the smaller sizes run APGD-CE (+ APGD-T) from the reference implementation,
    named as a substitute in the tables. Unless `quiet`, a line and a bar per attack on stderr."""
    model = models.load(run_dir / "model.safetensors").eval()
    test = data_lib.load(dataset, "test", data_dir=data_dir)
    eps = float(yaml.safe_load((run_dir / "config.yaml").read_text())["eps"])
    label = label or run_dir.name
    shown = not quiet
    record = attack_suite(
        model, test, attacks=["clean", "pgd-20", "cw"], eps=eps, n=size.eval_n, seed=seed, progress=shown, label=label
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # AutoAttack's own notes on tiny subsets
        strong = attack_suite(
            model, test, attacks=[size.autoattack], eps=eps, n=size.autoattack_n, seed=seed, progress=shown, label=label
        )
    name = size.autoattack
    record["accuracy"][name] = strong["accuracy"][name]
    record["attacks"][name] = {**strong["attacks"][name], "n_examples": strong["n_examples"]}
    record["seconds"][name] = strong["seconds"][name]
    # The worst case is over the attacks run on every image (clean, PGD-20, CW); AutoAttack has its own subset.
    record.pop("per_sample_worst_case")
    write_record(record, run_dir / "results.json")
    return record


def run_demo(
    *,
    size: str = "small",
    run_dir: str | Path = "runs/demo",
    data: str | None = None,
    data_dir: str | None = None,
    train_teacher: bool = False,
    retrain_teacher: bool = False,
    seed: int = 0,
    report: bool = True,
    quiet: bool = False,
    methods: tuple[str, ...] | None = None,
) -> Path:
    """Run the whole demo; returns the path of the report (or of the run directory without one)."""
    if size not in SIZES:
        raise ConfigError(f"unknown demo size '{size}'; choose from {', '.join(SIZES)}")
    preset = SIZES[size]
    if methods is not None:
        from robustdistill.methods import method_class

        for method in methods:
            method_class(method)  # unknown names fail here, before any training
        preset = replace(preset, methods=tuple(methods))
    root = Path(run_dir)
    if not data:
        console.print("looking for the Fashion-MNIST files")
    dataset = pick_dataset(data, data_dir)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--run-dir '{root}' is a file, not a directory; choose another --run-dir")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the run directory '{root}': {error.strerror or error}") from None
    with locked(root):  # one demo per directory: a second one is refused with this one's pid
        return _run_locked(root, preset, size, dataset, data_dir, seed, train_teacher, retrain_teacher, report, quiet)


def _run_locked(
    root: Path,
    preset: DemoSize,
    size: str,
    dataset: str,
    data_dir: str | None,
    seed: int,
    train_teacher: bool,
    retrain_teacher: bool,
    report: bool,
    quiet: bool,
) -> Path:
    base = _base(preset, dataset, data_dir, seed)
    started = time.perf_counter()

    teacher_dir = root / "teacher"
    zoo_name = None if train_teacher or retrain_teacher else models.zoo.for_dataset(data_lib.info(dataset)["name"])
    if zoo_name is not None:
        console.print(
            f"[bold]1/{len(preset.methods) + 2}[/] teacher: the shipped zoo:{zoo_name} "
            "(pass --train-teacher to train one instead)"
        )
        copy_zoo_teacher(zoo_name, teacher_dir)
        teacher_source = f"zoo:{zoo_name}"
    else:
        teacher_cfg = {
            **base,
            **TEACHER,
            "method": "pgd-at",
            "epochs": preset.teacher_epochs,
            "run_dir": str(teacher_dir),
            "overwrite": True,
        }
        if not retrain_teacher and _teacher_is_reusable(teacher_dir, load_config(flags=teacher_cfg).model_dump()):
            console.print(f"[green]reusing the teacher in {teacher_dir}[/] (pass --retrain-teacher to train it again)")
        else:
            because = "" if train_teacher or retrain_teacher else f" (no zoo teacher for {dataset})"
            console.print(
                f"[bold]1/{len(preset.methods) + 2}[/] training the teacher (pgd-at, {TEACHER['model']}){because}"
            )
            train_from_config("train-teacher", load_config(flags=teacher_cfg), quiet=quiet)
        teacher_source = str(teacher_dir)

    results = {"teacher": evaluate_run(teacher_dir, dataset, data_dir, preset, seed, label="teacher", quiet=quiet)}
    for step, method in enumerate(preset.methods, start=2):
        student_dir = root / method
        flags = {
            **base,
            **STUDENT,
            "method": method,
            "method_opts": METHOD_OPTS.get(method, {}),
            **({"lr": METHOD_LR[method]} if method in METHOD_LR else {}),
            "epochs": preset.epochs,
            "run_dir": str(student_dir),
            "overwrite": True,
        }
        command = "train-teacher" if method == "pgd-at" else "distill"
        if command == "distill":
            flags["teacher"] = teacher_source
        label = f"{method} (no teacher)" if method == "pgd-at" else method
        shown = {**METHOD_OPTS.get(method, {}), **({"lr": METHOD_LR[method]} if method in METHOD_LR else {})}
        if shown:
            label += " (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")"
        console.print(f"[bold]{step}/{len(preset.methods) + 2}[/] student: {label}")
        train_from_config(command, load_config(flags=flags), quiet=quiet)
        results[label] = evaluate_run(student_dir, dataset, data_dir, preset, seed, label=method, quiet=quiet)

    substitute = "" if preset.autoattack == "autoattack" else f", {preset.autoattack} as AutoAttack substitute"
    print_table(results, title=f"demo ({size}, {dataset}{substitute}): accuracy (%) under attack")
    console.print(f"trained and evaluated in {time.perf_counter() - started:.0f} s")
    if not report:
        return root
    from robustdistill.evaluate.report import write_report

    console.print(f"[bold]{len(preset.methods) + 2}/{len(preset.methods) + 2}[/] writing the report")
    path = write_report(
        root, data_dir=data_dir, sweep_n=preset.sweep_n, sweep_points=preset.sweep_points, progress=not quiet, seed=seed
    )
    console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
    return path
