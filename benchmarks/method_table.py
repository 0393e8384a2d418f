"""The full method table: every method with identical teacher, student, data, epochs and seed.

Each entry trains a student through the same code path as `robustdistill distill` /
`train-teacher`, then runs the attack suite on a fixed class-balanced test subset. Results go
to `<out>/<label>.json` (one record per result) and `<out>/table.md`. Finished entries are
skipped on a rerun, so an interrupted benchmark continues where it stopped.

Example (the command recorded in benchmarks/results/fashion-mnist/table.md):

    python benchmarks/method_table.py --teacher runs/bench/teacher --natural-teacher runs/bench/natural \
        --out benchmarks/results/fashion-mnist --work runs/bench
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from robustdistill import data as data_lib
from robustdistill import models
from robustdistill.config import load_config
from robustdistill.evaluate import environment, markdown_table, print_table, run, write_record
from robustdistill.runs import train_from_config
from robustdistill.train import read_metrics

# label -> (method, method options, needs a teacher)
ENTRIES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "standard": ("standard", {}, False),
    "pgd-at": ("pgd-at", {}, False),
    "trades": ("trades", {}, False),
    "mart": ("mart", {}, False),
    "kd": ("kd", {}, True),
    "ard": ("ard", {}, True),
    "iad": ("iad", {"warmup_epochs": 2}, True),
    "rslad": ("rslad", {}, True),
    "adaad": ("adaad", {}, True),
    "mtard": ("mtard", {}, True),
    "paths": ("paths", {}, True),
    "paths-untargeted": ("paths", {"branches": "untargeted"}, True),
    "paths-targeted": ("paths", {"branches": "targeted"}, True),
    "paths-uniform": ("paths", {"weighting": "uniform"}, True),
    "paths-last": ("paths", {"weighting": "last"}, True),
    "gacd-nce": ("gacd", {"estimator": "nce"}, True),
    "gacd-nce-noreweight": ("gacd", {"estimator": "nce", "reweight": "none"}, True),
    "gacd-infonce": ("gacd", {"estimator": "infonce"}, True),
    "gacd-infonce-noreweight": ("gacd", {"estimator": "infonce", "reweight": "none"}, True),
}


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The training budget every student of the benchmarks shares (also used by cross_task.py)."""
    parser.add_argument("--student", default="smallcnn")
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01, help="0.01 as TRADES for the BN-free SmallCNN")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=5, help="PGD steps of every method's inner maximisation")
    parser.add_argument("--seed", type=int, default=0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="teacher run directory or weights file")
    parser.add_argument("--natural-teacher", help="natural teacher for mtard (skipped without it)")
    parser.add_argument("--out", default="benchmarks/results/fashion-mnist")
    parser.add_argument("--work", default="runs/bench", help="where the student runs are written")
    parser.add_argument("--only", help="comma-separated entry labels (default: all)")
    parser.add_argument("--data", default="fashion-mnist")
    add_budget_arguments(parser)
    parser.add_argument("--n", type=int, default=1000, help="test images for clean, FGSM, PGD-20 and CW")
    parser.add_argument("--attacks", default="clean,fgsm,pgd-20,cw")
    parser.add_argument("--aa-n", type=int, default=200, help="test images for AutoAttack (standard)")
    parser.add_argument("--teacher-record", help="the teacher's evaluation record (same attacks and subset)")
    parser.add_argument(
        "--evaluate-teacher",
        action="store_true",
        help="measure the teacher like a student (same attacks, subsets and seed) into <out>/teacher.json",
    )
    parser.add_argument("--table-only", action="store_true", help="only rebuild table.md from the records")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--note", default="", help="a sentence added to table.md (how the run was split, ...)")
    return parser.parse_args(argv)


def train_entry(label: str, args: argparse.Namespace) -> Path:
    method, options, needs_teacher = ENTRIES[label]
    run_dir = Path(args.work) / label
    if (run_dir / "model.safetensors").exists():
        return run_dir
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    flags: dict[str, Any] = {
        "data": args.data,
        "model": args.student,
        "method": method,
        "method_opts": options,
        "subset": args.subset,
        "test_subset": 500,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "eps": args.eps,
        "steps": args.steps,
        "seed": args.seed,
        "run_dir": str(run_dir),
        "overwrite": not resume,
        "eval_attacks": ["clean", "pgd-20"],
    }
    command = "train-teacher"
    if needs_teacher:
        command = "distill"
        flags["teacher"] = args.teacher
        if method == "mtard":
            flags["natural_teacher"] = args.natural_teacher
    train_from_config(command, load_config(flags=flags), resume=resume, quiet=False)
    return run_dir


def add_autoattack(
    record: dict[str, Any], model: torch.nn.Module, test: data_lib.ArrayDataset, args: argparse.Namespace
) -> None:
    """Standard AutoAttack on its own (smaller) class-balanced subset of `aa_n` images, added to `record`."""
    strong = run(model, test, attacks=["autoattack"], eps=args.eps, n=args.aa_n, seed=args.seed)
    record["accuracy"]["autoattack"] = strong["accuracy"]["autoattack"]
    record["attacks"]["autoattack"] = {**strong["attacks"]["autoattack"], "n_examples": strong["n_examples"]}
    record["seconds"]["autoattack"] = strong["seconds"]["autoattack"]


def train_seconds(run_dir: Path) -> float:
    """Seconds spent in the training epochs of a run, from its metrics log."""
    return sum(r.get("seconds", 0.0) for r in read_metrics(run_dir))


def weights_sha256(run_dir: Path) -> str:
    return str(json.loads((run_dir / "model.json").read_text())["sha256"])


def evaluate_entry(label: str, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The attack suite on `n` images, then AutoAttack.

    A record without AutoAttack gets it added on a rerun, but only from the very student it was
    measured on (same weights hash): a retrained student would mix two models in one record.
    """
    path = Path(args.out) / f"{label}.json"
    record = json.loads(path.read_text()) if path.exists() else None
    if record is not None and (not args.aa_n or "autoattack" in record["accuracy"]):
        return record
    if record is not None and record.get("weights_sha256") != weights_sha256(run_dir):
        raise SystemExit(
            f"{path} was measured on another student than {run_dir} (weights hash differs or was not recorded): "
            "delete the record to measure the new student from scratch"
        )
    model = models.load(run_dir / "model.safetensors").eval()
    test = data_lib.load(args.data, "test")
    if record is not None:
        add_autoattack(record, model, test, args)
        write_record(record, path)
        return record
    record = run(model, test, attacks=args.attacks, eps=args.eps, n=args.n, seed=args.seed)
    record.pop("per_sample_worst_case")
    if args.aa_n:
        add_autoattack(record, model, test, args)
    record.update(
        label=label,
        method=ENTRIES.get(label, (label, {}, False))[0],
        method_opts=ENTRIES.get(label, (label, {}, False))[1],
        train_seconds=train_seconds(run_dir),
        run_dir=str(run_dir),
        weights_sha256=weights_sha256(run_dir),
    )
    write_record(record, path)
    return record


def write_table(records: dict[str, dict[str, Any]], args: argparse.Namespace, command: str) -> Path:
    lines = [
        f"# Method table: {args.data}, eps {args.eps}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()} CPU ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}. Student `{args.student}`, teacher `{args.teacher}`; every method trained "
        f"{args.epochs} epochs on the same {args.subset}-image class-balanced training subset (seed {args.seed}), "
        f"batch {args.batch_size}, lr {args.lr}, {args.steps}-step PGD (step eps/4) for every inner maximisation. "
        f"Accuracy (%) on a fixed class-balanced subset of {args.n} test images; `worst_case` counts an image only "
        "if it survives clean, FGSM, PGD-20 and CW. AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) runs on "
        f"its own class-balanced subset of {args.aa_n} test images (CPU time).",
        "",
        markdown_table(records),
        "",
        *([args.note, ""] if args.note else []),
        "Training time (s, on this machine): "
        + ", ".join(f"{label} {r['train_seconds']:.0f}" for label, r in records.items() if "train_seconds" in r),
        "",
    ]
    path = Path(args.out) / "table.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = list(argv or sys.argv[1:])
    shown = ["(the paragraph under the table)" if i and raw[i - 1] == "--note" else a for i, a in enumerate(raw)]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *shown])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    labels = args.only.split(",") if args.only else list(ENTRIES)
    records: dict[str, dict[str, Any]] = {}
    teacher_record = Path(args.teacher_record) if args.teacher_record else None
    if teacher_record is not None and teacher_record.exists():
        records["teacher"] = json.loads(teacher_record.read_text())
    if args.evaluate_teacher and not args.table_only:
        records["teacher"] = evaluate_entry("teacher", Path(args.teacher), args)
    for label in [] if args.table_only else labels:
        if ENTRIES[label][0] == "mtard" and not args.natural_teacher:
            print(f"skipping {label}: no --natural-teacher", file=sys.stderr)
            continue
        run_dir = train_entry(label, args)
        records[label] = evaluate_entry(label, run_dir, args)
        print_table({label: records[label]})
    for path in sorted(Path(args.out).glob("*.json")):
        label = path.stem
        if (label in ENTRIES or label == "teacher") and label not in records:
            records[label] = json.loads(path.read_text())
    ordered = {k: records[k] for k in ["teacher", *ENTRIES] if k in records}
    print_table(ordered)
    print(f"table: {write_table(ordered, args, command)}; environment: {environment()}")


if __name__ == "__main__":
    main()
