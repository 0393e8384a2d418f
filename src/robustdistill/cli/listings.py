"""The listings: `models`, `zoo`, `datasets` and `methods` (or one method's options)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from robustdistill.cli.common import console


def list_models() -> None:
    """List the registered architectures."""
    from robustdistill import models

    table = Table(title="models")
    table.add_column("name")
    for name in models.available():
        table.add_row(name)
    console.print(table)
    console.print("WideResNets of any depth/width: wrn-D-K with (D-4) divisible by 6, e.g. wrn-16-4.")


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
    for column in ("name", "role", "teacher", "options"):
        table.add_column(column)
    for method in methods.available():
        spec = methods.spec(method)
        needs = "robust + natural" if spec.needs_natural_teacher else ("yes" if spec.needs_teacher else "no")
        table.add_row(method, spec.role, needs, ", ".join(spec.options.keys()))
    console.print(table)
