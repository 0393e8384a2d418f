"""Turn a run directory (one run, or a collection of runs such as `runs/demo/`) into a report.

    >>> from robustdistill.evaluate.report import write_report
    >>> write_report("runs/demo")            # -> runs/demo/report.md, PNGs in runs/demo/figures/

Runs are found by `evaluate.discovery` (a teacher and its students), the figures drawn by the sections
of `evaluate.sections.ReportState` (the eps sweep cached in `sweep.json` by `evaluate.sweep_cache`),
and the markdown written here: a header with dataset and eps, the settings, warnings, a table of the
runs, the results table (from each run's `results.json`; without any, the last in-training
evaluation) and the figures with captions. See docs/reading-results.md.
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import robustdistill
from robustdistill.evaluate import table
from robustdistill.evaluate.discovery import Run, epoch_records, eps_of, last_eval, train_seconds
from robustdistill.evaluate.sections import FIGURES, ReportState, sweep_score
from robustdistill.evaluate.table import format_eps, format_norm, number
from robustdistill.utils import atomic_write_bytes

__all__ = ["training_warnings", "write_report"]


def write_report(
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    sweep_n: int = 500,
    sweep_points: int = 9,
    sweep_steps: int = 20,
    examples: int = 8,
    device: str | None = None,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Write `report.md` and `figures/*.png` into `run_dir`; returns the path of `report.md`.

    Args:
        run_dir: one run, or a directory of runs (a teacher and students).
        data_dir: where the dataset lives (default: each run's `data_dir` setting, then the usual search).
        sweep_n, sweep_points, sweep_steps: eps sweep on `sweep_n` test images at `sweep_points` radii
            from 0 to 2*eps with PGD-`sweep_steps`; 0 for `sweep_n` or `sweep_points` skips the sweep.
        examples: number of images in the adversarial-example grid (0 skips it).
        device: "cpu", "cuda", ... (default: CUDA when available).
        progress: progress bars and status lines on stderr.
        seed: seed of the subsets and of the attacks' random starts.

    Raises:
        ConfigError: `run_dir` is neither a run nor a directory of runs.
    """
    state = ReportState(Path(run_dir), data_dir=data_dir, device=device, progress=progress)
    state.figures_dir.mkdir(parents=True, exist_ok=True)
    state.training_curves()
    if sweep_n > 0 and sweep_points > 0:
        state.eps_sweeps(n=sweep_n, points=sweep_points, steps=sweep_steps, seed=seed)
    state.paths_profiles()
    if examples > 0:
        state.adversarial_examples(count=examples, seed=seed)
    report = state.run_dir / "report.md"
    atomic_write_bytes(report, markdown(state).encode())
    state.console.print(f"report: {report} ({len(state.figures)} figures in {state.figures_dir})")
    return report


def _accuracy_table(rows: list[tuple[str, str, dict[str, Any]]], extra: str | None) -> str:
    """Markdown table: one row per run, one column per attack, accuracy % ± error and images per column.

    `rows` are `(label, role, record)` with a record shaped like `evaluate.attack_suite`'s (`accuracy`,
    optionally `n_examples`, `attacks`, `worst_case_over`, `accuracy_by_seed`). A column's best non-teacher
    value is in bold only when it beats every other one beyond the noise. `extra` names a last column read
    from each record (`epoch`).
    """
    records = {label: record for label, _, record in rows}
    titles, texts = table.text_grid(records, contenders=[label for label, role, _ in rows if role != "teacher"])
    header = ["run", "role", *titles, *([extra] if extra else [])]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for (label, role, record), cells in zip(rows, texts, strict=True):
        last = [str(record.get(extra, "-"))] if extra else []
        lines.append(f"| {label} | {role} | " + " | ".join([*cells, *last]) + " |")
    return "\n".join(lines) + "\n"


def _runs_table(runs: list[Run]) -> list[str]:
    lines = [
        "| run | role | method | model | data | training subset | eps | epochs | attack steps | seed | train time "
        "| teacher |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        epochs = epoch_records(run.metrics)
        cfg = run.config
        teacher = Path(run.teacher_ref) if run.teacher_ref else None
        if teacher is not None and teacher.suffix == ".safetensors":
            teacher = teacher.parent
        lines.append(
            f"| {run.label} | {run.role} | {cfg.get('method', '-')} | {cfg.get('model', '-')} | "
            f"{cfg.get('data', '-')} | {cfg.get('subset') or 'all'} | {eps_of(cfg):.4g} | "
            f"{epochs[-1]['epoch'] if epochs else '-'} | {cfg.get('steps', '-')} | {cfg.get('seed', '-')} | "
            f"{f'{train_seconds(run):.0f} s' if epochs else '-'} | {teacher.name if teacher else '-'} |"
        )
    return lines


def _results_section(runs: list[Run]) -> list[str]:
    with_results = [r for r in runs if r.results]
    if not with_results:
        rows = [
            (r.label, r.role, {"accuracy": acc, "n_examples": r.config.get("eval_n"), "epoch": epoch})
            for r in runs
            for epoch, acc in [last_eval(r)]
            if acc
        ]
        if not rows:
            return ["No `results.json` and no in-training evaluation found: nothing to tabulate."]
        return [
            _accuracy_table(rows, "epoch"),
            "No run has a `results.json`, so this table shows the last in-training evaluation from "
            "`metrics.jsonl` (accuracy % ± standard error, on the small `eval_n` subset with the training-time "
            "attacks): a rough guide, not a final evaluation; run `robustdistill evaluate --json results.json` "
            "for that.",
        ]
    rows = [(r.label, r.role, r.results) for r in with_results]  # type: ignore[misc]
    settings = sorted(
        {(number(r.results.get("eps")), str(r.results.get("split") or "test")) for r in with_results}  # type: ignore[union-attr]
    )
    described = "; ".join(f"eps {format_eps(e)} on the {s} split" for e, s in settings if not math.isnan(e))
    records = {label: record for label, _, record in rows}
    seeded = any(record.get("accuracy_by_seed") for record in records.values())
    lines = [
        _accuracy_table(rows, None),
        "Accuracy (%) of each run's final model under each attack, from its `results.json`"
        + (f" ({described})" if described else "")
        + (
            ", as mean ± 95% interval over seeds"
            if seeded
            else ", ± the binomial standard error sqrt(p (1 - p) / n) of an accuracy p on n images"
        )
        + "; n is the number of class-balanced test images of each column. `worst case` counts an image only "
        "if it survives every attack run on the same images (clean included) and is never above any of them"
        + (
            "; **bold** marks a column's best non-teacher value only where it beats every other student by more "
            "than the noise (1.96 combined standard errors), so a column without bold has no clear winner."
            if sum(r.role != "teacher" for r in with_results) > 1
            else "."
        ),
    ]
    for name in table.substitutes(records):
        lines += [
            "",
            f"`{name}` runs only {' and '.join(p.upper() for p in name.split('+'))} of the reference AutoAttack "
            "(standard AutoAttack also runs FAB-T and Square); it is a quicker substitute, usually a little "
            "weaker, not the standard AutoAttack number.",
        ]
    missing = [r.label for r in runs if not r.results]
    if missing:
        lines += ["", f"No `results.json` for: {', '.join(missing)} (write one with `robustdistill evaluate --json`)."]
    return lines


def _clean_of(run: Run) -> tuple[float, int | None]:
    """Clean accuracy and its number of images: from `results.json`, else the last in-training evaluation."""
    if run.results and "clean" in run.results["accuracy"]:
        return number(run.results["accuracy"]["clean"]), table.column_size(run.results, "clean")
    found = last_eval(run)[1]
    return number(found.get("clean")), run.config.get("eval_n")


def training_warnings(run: Run, num_classes: int | None) -> list[str]:
    """Warnings for a model near chance (clean accuracy within 1.5x chance or 2 standard errors of it)
    or undertrained (a single epoch, or training loss still falling by over 5% or clean accuracy still
    rising by over 2 points in the last epoch)."""
    found: list[str] = []
    clean, n = _clean_of(run)
    if num_classes and not math.isnan(clean):
        chance = 1.0 / num_classes
        error = math.sqrt(chance * (1 - chance) / n) if n else 0.0
        if clean <= max(1.5 * chance, chance + 2 * error):
            found.append(
                f"{run.label} is near chance: clean accuracy {100 * clean:.1f}% against {100 * chance:.1f}% "
                f"for {num_classes} classes; its robust accuracies say little about the method."
            )
    epochs = epoch_records(run.metrics)
    if len(epochs) == 1:
        found.append(f"{run.label} was trained for a single epoch: its numbers are a smoke test, not a result.")
    if len(epochs) >= 2:
        loss = [number(r.get("train_loss")) for r in epochs[-2:]]
        accuracy = [number(r.get("eval_clean")) for r in epochs[-2:]]
        if loss[0] > 0 and loss[1] < 0.95 * loss[0]:
            found.append(
                f"{run.label} looks undertrained: its training loss still fell {100 * (1 - loss[1] / loss[0]):.0f}% "
                f"in the last epoch ({epochs[-1]['epoch']}); more epochs would likely change its numbers."
            )
        elif accuracy[1] - accuracy[0] > 0.02:
            found.append(
                f"{run.label} looks undertrained: its clean accuracy still rose "
                f"{100 * (accuracy[1] - accuracy[0]):.1f} points in the last epoch ({epochs[-1]['epoch']})."
            )
    return found


def _distinct(values: list[Any]) -> str:
    shown: list[str] = []
    for value in values:
        text = "-" if value is None or value == "" else str(value)
        if text not in shown:
            shown.append(text)
    return ", ".join(shown) or "-"


def _settings_block(state: ReportState) -> list[str]:
    """What was measured, in one place: data, training, attacks, evaluation subsets, seeds, versions, time."""
    import torch

    runs, data = state.runs, state.primary_data
    configs = [r.config for r in runs]
    evaluated = [r for r in runs if r.results]
    sizes = {
        r.label: ", ".join(
            f"{name} {table.column_size(r.results, name)}" for name in r.results["accuracy"] if name != "worst_case"
        )
        for r in evaluated
        if r.results
    }
    per_attack = [f"{label}: {text}" for label, text in sizes.items()]
    if len(sizes) > 1 and len(set(sizes.values())) == 1:
        per_attack = [f"every run: {next(iter(sizes.values()))}"]
    results = [r.results for r in evaluated if r.results]  # evaluated has results: this narrows the type
    environments = [res["environment"] for res in results if isinstance(res.get("environment"), dict)]
    versions = _distinct([f"robustdistill {e.get('robustdistill')}, torch {e.get('torch')}" for e in environments])
    if not environments:
        versions = f"robustdistill {robustdistill.__version__}, torch {torch.__version__} (of this report)"
    seconds = {
        "training": sum(train_seconds(r) for r in runs),
        "evaluation": sum(number(v) for res in results for v in (res.get("seconds") or {}).values()),
        "eps sweep": sum(number(record.get("seconds")) for record in state.sweeps.values()),
    }
    teacher = f" (teacher: {state.teacher.label})" if state.teacher else ""
    generated = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    in_training = "none (in-training evaluation on eval_n = " + _distinct([c.get("eval_n") for c in configs]) + ")"
    return [
        "## Settings",
        "",
        f"- **Data:** {state.dataset_name}; training subset: "
        + _distinct([c.get("subset") or "full training set" for c in configs])
        + " images; evaluation: test split"
        + (f" ({len(data)} images, {data.num_classes} classes)" if data is not None else ""),
        "- **Training:** epochs "
        + _distinct([len(epoch_records(r.metrics)) or r.config.get("epochs") for r in runs])
        + f"; training attack: PGD with {_distinct([c.get('steps') for c in configs])} steps"
        + f"; batch size {_distinct([c.get('batch_size') for c in configs])}",
        f"- **Threat model:** {format_norm(state.norm)}, eps = {format_eps(state.eps)}",
        "- **Evaluation images per attack:** " + ("; ".join(per_attack) or in_training),
        f"- **Seeds:** {_distinct([c.get('seed') for c in configs])}",
        f"- **Versions:** {versions}",
        f"- **Runs:** {len(runs)}{teacher}; report generated on {generated}",
        "- **Wall time:** " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + " (a cached sweep counts "
        "the time of its first run)",
        "",
    ]


def markdown(state: ReportState) -> str:
    """The text of `report.md` from the state the sections filled."""
    data = state.primary_data
    records = {r.label: r.results for r in state.runs if r.results}
    stand_ins = table.substitutes(records)
    substitute = (
        " (AutoAttack substitute: " + "; ".join(n.upper().replace("+", " + ") for n in stand_ins) + ")"
        if stand_ins
        else ""
    )
    warned = [w for run in state.runs for w in training_warnings(run, data.num_classes if data else None)]
    lines = [
        f"# Robust distillation report: {state.run_dir.resolve().name}{substitute}",
        "",
        *_settings_block(state),
        *(["## Warnings", "", *[f"- **{w}**" for w in warned], ""] if warned else []),
        "## Runs",
        "",
        *_runs_table(state.runs),
        "",
        "## Results",
        "",
        *_results_section(state.runs),
    ]
    if state.sweeps:
        lines += [
            "",
            "Accuracy (%) ± standard error from the eps sweep (PGD, its own class-balanced subset) at eps 0 "
            "(clean), the training eps (interpolated if it is not a sweep point) and twice it:",
            "",
        ]
        lines += ["| run | n | clean | eps | 2 eps |", "|---|---:|---:|---:|---:|"]
        for label, record in state.sweeps.items():
            accuracy, n = record["accuracy"], record.get("n_examples")
            points = [number(accuracy[0]), sweep_score(record, state.eps), number(accuracy[-1])]
            cells = [table.Cell(p, math.sqrt(p * (1 - p) / n) if n else math.nan, n).text() for p in points]
            lines.append(f"| {label} | {n if n else '-'} | " + " | ".join(cells) + " |")
    lines += ["", "## Figures", ""]
    if not state.figures:
        lines += ["No figures could be drawn (see the notes below).", ""]
    for index, figure in enumerate(state.figures, start=1):
        lines += [
            f"### {index}. {figure.heading}",
            "",
            f"![{figure.heading}]({FIGURES}/{figure.file})",
            "",
            f"*Figure {index}. {figure.caption}*",
            "",
        ]
    if state.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in state.notes], ""]
    lines += [
        "See `docs/reading-results.md` for how to read these numbers and figures, and for the caveats "
        "(subset sizes, AutoAttack as the number to trust, signs of gradient masking).",
        "",
    ]
    return "\n".join(lines)
