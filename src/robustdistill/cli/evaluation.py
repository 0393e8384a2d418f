"""`evaluate` (the attack suite on a checkpoint) and `report` (report.md and figures of runs)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from robustdistill.cli.common import (
    ATTACK_NAMES,
    DataDirOpt,
    DeviceOpt,
    EpsOpt,
    QuietOpt,
    _existing,
    console,
    err_console,
)

if TYPE_CHECKING:
    from robustdistill.models import Classifier


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
    from robustdistill.evaluate import attack_suite, print_table, write_record
    from robustdistill.evaluate.record import check_record_path
    from robustdistill.utils import file_sha256

    if n is not None and n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--seed must be in [0, 2**32), got {seed}")
    eps_value = check_eps(eps, norm) if eps is not None else default_eps(data)
    warn_large_eps(eps_value, norm)
    loaded, weights = runs.load_model(str(_existing(checkpoint, "--checkpoint")))
    model = cast("Classifier", loaded)  # runs.load_model returns models.load(...), a Classifier
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
        record = attack_suite(
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
