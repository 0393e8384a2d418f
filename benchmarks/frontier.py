"""Cost–accuracy frontier: training compute against AutoAttack accuracy, several seeds per configuration.

Every entry trains a student through the same code path as `robustdistill distill` / `train-teacher`
(on the full training set by default) for each seed, counting the samples that go through each
network's forward and backward passes, then measures clean and AutoAttack (standard) accuracy on a
fixed class-balanced test subset. Per run: `<out>/runs/<label>-seed<s>.json`; over the seeds:
`<out>/frontier.md` (mean and 95 % confidence interval of the accuracy, Student t over the seeds;
mean training seconds and counted passes) and `<out>/frontier.png` (accuracy against seconds and
against counted passes). Finished runs are skipped on a rerun.

Counted passes (per network, in samples): `forward` counts every sample a forward call of the
network sees (attack steps, alignment, no-grad teacher calls); `backward` every sample a gradient
flows back through the network's output for (an attack step's input gradient, the parameter
backward of the loss; a forward whose output takes both counts twice). Hooks on the student and
the teachers count them while `fit` runs; an interrupted and resumed run counts only the resumed
part and its record says so (`passes_complete: false`).

Example (the evidence protocol: the shipped teacher, full Fashion-MNIST, 3 seeds)::

    python benchmarks/frontier.py --teacher runs/bench/teacher --out benchmarks/results/frontier \\
        --work runs/frontier --seeds 0,1,2 --epochs 10 --steps 10
    python benchmarks/frontier.py --teacher runs/bench/teacher --out benchmarks/results/frontier --table-only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import shlex
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from torch import nn

import robustdistill.train
from robustdistill import data as data_lib
from robustdistill import models
from robustdistill.config import load_config
from robustdistill.evaluate import attack_suite, environment, write_record
from robustdistill.evaluate.plots import new_figure, save_png
from robustdistill.runs import train_from_config
from robustdistill.utils import atomic_write_bytes

# the comparison whose cost the cheap configurations must beat, and the accuracy they must keep
BASELINE, REFERENCE = "ard", "paths"


def entries(steps: int) -> dict[str, tuple[str, dict[str, Any], bool, dict[str, Any]]]:
    """label -> (method, method options, needs a teacher, student model options), for K = `steps`."""
    reuse = max(1, steps // 5)  # the warm-started attack of the next epochs: K/5 steps (1 for K <= 9)
    every_second = ",".join(str(k) for k in range(2, steps + 1, 2))
    no_dropout = {"dropout": 0.0}  # share_forward needs a student whose train and eval outputs agree
    table: dict[str, tuple[str, dict[str, Any], bool, dict[str, Any]]] = {
        "pgd-at": ("pgd-at", {}, False, {}),
        "fgsm-rs": ("fgsm-rs", {}, False, {}),
        "ard": ("ard", {}, True, {}),
        "rslad": ("rslad", {}, True, {}),
        "adaad": ("adaad", {}, True, {}),
        "paths": ("paths", {}, True, {}),
        "paths-every-second": ("paths", {"aligned_steps": every_second}, True, {}),
        "paths-final": ("paths", {"aligned_steps": str(steps)}, True, {}),
        "paths-sample2": ("paths", {"sample_steps": 2}, True, {}),
        "paths-sample1": ("paths", {"sample_steps": 1}, True, {}),
        "paths-sample1-share": ("paths", {"sample_steps": 1, "share_forward": True}, True, no_dropout),
        "paths-share": ("paths", {"share_forward": True}, True, no_dropout),
        "pgd-at-reuse": ("pgd-at", {"reuse_steps": reuse}, False, {}),
        "ard-reuse": ("ard", {"reuse_steps": reuse}, True, {}),
        "rslad-reuse": ("rslad", {"reuse_steps": reuse}, True, {}),
        "adaad-reuse": ("adaad", {"reuse_steps": reuse}, True, {}),
    }
    return table


# ============================================================================ counting passes


class PassCounter:
    """Samples through each network's forward and backward passes, counted by hooks (module docstring)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def attach(self, model: nn.Module, role: str) -> torch.utils.hooks.RemovableHandle:
        def count_backward(rows: int) -> Any:
            def hook(grad: torch.Tensor) -> None:
                self.counts[f"{role}_backward"] += rows

            return hook

        def count_forward(module: nn.Module, inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            rows = int(output.shape[0])
            self.counts[f"{role}_forward"] += rows
            if output.requires_grad:
                output.register_hook(count_backward(rows))

        return model.register_forward_hook(count_forward)

    def as_dict(self) -> dict[str, int]:
        keys = [f"{role}_{kind}" for role in ("student", "teacher") for kind in ("forward", "backward")]
        return {key: int(self.counts[key]) for key in keys}


@contextlib.contextmanager
def counting_passes(counter: PassCounter) -> Iterator[None]:
    """While open, every `robustdistill.train.fit` call counts the passes of its student and teachers."""
    original = robustdistill.train.fit

    def counted_fit(student: nn.Module, method: Any, *args: Any, **kwargs: Any) -> Any:
        handles = [counter.attach(student, "student"), *(counter.attach(t, "teacher") for t in method.teachers())]
        try:
            return original(student, method, *args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    robustdistill.train.fit = counted_fit
    try:
        yield
    finally:
        robustdistill.train.fit = original


# ============================================================================ one run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="teacher run directory or weights file")
    parser.add_argument("--out", default="benchmarks/results/frontier")
    parser.add_argument("--work", default="runs/frontier", help="where the student runs are written")
    parser.add_argument("--only", help="comma-separated entry labels (default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--student", default="smallcnn")
    parser.add_argument("--subset", type=int, default=None, help="training images (default: the full set)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01, help="0.01 as TRADES for the BN-free SmallCNN")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=10, help="PGD steps K of every inner maximisation")
    parser.add_argument("--n", type=int, default=1000, help="test images for clean accuracy")
    parser.add_argument("--aa-n", type=int, default=1000, help="test images for AutoAttack (standard)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild frontier.md and .png")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--note", default="", help="a sentence added to frontier.md")
    args = parser.parse_args(argv)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    return args


def train_run(label: str, seed: int, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """Train one entry for one seed (or find it trained); its counted passes in `<run>/passes.json`."""
    method, options, needs_teacher, model_opts = entries(args.steps)[label]
    run_dir = Path(args.work) / f"{label}-seed{seed}"
    passes_file = run_dir / "passes.json"
    if (run_dir / "model.safetensors").exists() and passes_file.exists():
        return run_dir, json.loads(passes_file.read_text())
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    flags: dict[str, Any] = {
        "data": args.data,
        "model": args.student,
        "model_opts": model_opts,
        "method": method,
        "method_opts": options,
        "subset": args.subset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "eps": args.eps,
        "steps": args.steps,
        "seed": seed,
        "run_dir": str(run_dir),
        "overwrite": not resume,
        "eval_every": 0,  # nothing but training goes through the counted networks
    }
    command = "train-teacher"
    if needs_teacher:
        command = "distill"
        flags["teacher"] = args.teacher
    counter = PassCounter()
    with counting_passes(counter):
        train_from_config(command, load_config(flags=flags), resume=resume, quiet=False)
    passes = {**counter.as_dict(), "passes_complete": not resume}
    write_record(passes, passes_file)
    return run_dir, passes


def train_seconds(run_dir: Path) -> float:
    """Seconds spent in the training epochs of a run, from its metrics log."""
    return sum(r.get("seconds", 0.0) for r in robustdistill.train.read_metrics(run_dir))


def measure_run(label: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.out) / "runs" / f"{label}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    run_dir, passes = train_run(label, seed, args)
    model = models.load(run_dir / "model.safetensors").eval()
    test = data_lib.load(args.data, "test")
    record = attack_suite(model, test, attacks=["clean"], eps=args.eps, n=args.n, seed=seed)
    strong = attack_suite(model, test, attacks=["autoattack"], eps=args.eps, n=args.aa_n, seed=seed)
    record["accuracy"]["autoattack"] = strong["accuracy"]["autoattack"]
    record["attacks"]["autoattack"] = {**strong["attacks"]["autoattack"], "n_examples": strong["n_examples"]}
    record.pop("per_sample_worst_case", None)
    method, options, _, model_opts = entries(args.steps)[label]
    record.update(
        label=label,
        seed=seed,
        method=method,
        method_opts=options,
        model_opts=model_opts,
        train_seconds=train_seconds(run_dir),
        passes=passes,
        run_dir=str(run_dir),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_record(record, path)
    return record


# ============================================================================ table and figure


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t interval over the seeds (half-width nan for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(half)


def total_passes(passes: dict[str, Any]) -> int:
    """Forward plus backward samples of the student and the teachers."""
    return sum(int(passes[k]) for k in ("student_forward", "student_backward", "teacher_forward", "teacher_backward"))


def summarise(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per label over its seeds: accuracy means and 95 % intervals (%), mean seconds and passes."""
    by_label: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_label.setdefault(record["label"], []).append(record)
    rows: dict[str, dict[str, Any]] = {}
    for label, group in by_label.items():
        autoattack, half = confidence_interval([100 * r["accuracy"]["autoattack"] for r in group])
        clean, clean_half = confidence_interval([100 * r["accuracy"]["clean"] for r in group])
        rows[label] = {
            "method": group[0]["method"],
            "method_opts": group[0]["method_opts"],
            "model_opts": group[0].get("model_opts", {}),
            "seeds": sorted(r["seed"] for r in group),
            "autoattack": autoattack,
            "autoattack_ci95": half,
            "clean": clean,
            "clean_ci95": clean_half,
            "seconds": statistics.fmean(r["train_seconds"] for r in group),
            "passes": statistics.fmean(total_passes(r["passes"]) for r in group),
            "student_passes": statistics.fmean(
                r["passes"]["student_forward"] + r["passes"]["student_backward"] for r in group
            ),
            "passes_complete": all(r["passes"].get("passes_complete", True) for r in group),
            "aa_n": group[0]["attacks"]["autoattack"]["n_examples"],
        }
    baseline = rows.get(BASELINE)
    reference = rows.get(REFERENCE)
    for row in rows.values():
        row["seconds_over_baseline"] = row["seconds"] / baseline["seconds"] if baseline else math.nan
        row["within_reference_ci"] = (
            None
            if reference is None or math.isnan(reference["autoattack_ci95"])
            else abs(row["autoattack"] - reference["autoattack"]) <= reference["autoattack_ci95"]
        )
    return rows


def _fmt_ci(mean: float, half: float) -> str:
    return f"{mean:.1f}" if math.isnan(half) else f"{mean:.1f} ± {half:.1f}"


def markdown(rows: dict[str, dict[str, Any]], header: list[str]) -> str:
    """The frontier table: one row per configuration, cheapest first."""
    lines = [
        *header,
        f"| configuration | options | seeds | AutoAttack % (95 % CI) | clean % (95 % CI) | train s | s / {BASELINE} | "
        f"passes (M samples) | student passes (M) | AutoAttack within the 95 % CI of {REFERENCE} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, row in sorted(rows.items(), key=lambda item: item[1]["seconds"]):
        options = {**row["method_opts"], **{f"model.{k}": v for k, v in row["model_opts"].items()}}
        shown = "; ".join(f"{k}={v}" for k, v in options.items()) or "(defaults)"
        within = {None: "-", True: "yes", False: "no"}[row["within_reference_ci"]]
        partial = "" if row["passes_complete"] else " (partial)"
        lines.append(
            f"| {label} | `{shown}` | {len(row['seeds'])} | {_fmt_ci(row['autoattack'], row['autoattack_ci95'])} | "
            f"{_fmt_ci(row['clean'], row['clean_ci95'])} | {row['seconds']:.0f} | {row['seconds_over_baseline']:.2f} | "
            f"{row['passes'] / 1e6:.2f}{partial} | {row['student_passes'] / 1e6:.2f}{partial} | {within} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict[str, Any]], path: Path) -> Path:
    """AutoAttack accuracy (95 % CI bars) against training seconds and against counted passes."""
    figure = new_figure(11, 4.5)
    axes = figure.subplots(1, 2, sharey=True)
    for axis, key, xlabel in (
        (axes[0], "seconds", "training time (s)"),
        (axes[1], "passes", "forward + backward samples (millions), student and teacher"),
    ):
        for label, row in rows.items():
            x = row[key] / (1e6 if key == "passes" else 1.0)
            error = None if math.isnan(row["autoattack_ci95"]) else row["autoattack_ci95"]
            marker = "s" if label.startswith(REFERENCE) else ("^" if label.endswith("-reuse") else "o")
            axis.errorbar(x, row["autoattack"], yerr=error, fmt=marker, capsize=3)
            axis.annotate(label, (x, row["autoattack"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("AutoAttack accuracy (%), mean over seeds")
    figure.suptitle("Cost-accuracy frontier (bars: 95 % CI over seeds)")
    return save_png(figure, path)


def write_report(records: list[dict[str, Any]], args: argparse.Namespace, command: str) -> tuple[Path, Path]:
    rows = summarise(records)
    out = Path(args.out)
    header = [
        f"# Cost-accuracy frontier: {args.data}, eps {args.eps}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()} CPU ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}. Student `{args.student}`, teacher `{args.teacher}`; "
        f"{args.epochs} epochs on {'the full training set' if args.subset is None else f'{args.subset} images'}, "
        f"batch {args.batch_size}, lr {args.lr}, K = {args.steps} PGD steps (eps/4) for every inner maximisation. "
        "Accuracy: mean over the seeds with the 95 % Student-t interval over the seeds; AutoAttack (standard) "
        "on a class-balanced test subset of "
        + ", ".join(sorted({str(r["aa_n"]) for r in rows.values()}))
        + " images. Passes: samples through the forward and backward passes of the student and the teacher "
        "(benchmarks/frontier.py). Rows sorted by training time.",
        "",
        *([args.note, ""] if args.note else []),
    ]
    write_record(rows, out / "frontier.json")
    table = out / "frontier.md"
    atomic_write_bytes(table, markdown(rows, header).encode())
    return table, plot(rows, out / "frontier.png")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/frontier.py " + shlex.join(list(argv or sys.argv[1:]))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    known = entries(args.steps)
    labels = args.only.split(",") if args.only else list(known)
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise SystemExit(f"unknown entries: {', '.join(unknown)}; known: {', '.join(known)}")
    if not args.table_only:
        for label in labels:
            for seed in args.seed_list:
                measure_run(label, seed, args)
    records = [json.loads(p.read_text()) for p in sorted((Path(args.out) / "runs").glob("*.json"))]
    if not records:
        raise SystemExit(f"no run records under {Path(args.out) / 'runs'}")
    table, figure = write_report(records, args, command)
    print(f"table: {table}; figure: {figure}; environment: {environment()}")


if __name__ == "__main__":
    main()
