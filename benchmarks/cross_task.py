"""Cross-task transfer with `gacd`: a teacher of task A makes a student of task B robust.

Trains, through the `robustdistill` command line, students on task B (default `animal-mnist`)
with the same student, data, epochs and seed:

- `gacd` (InfoNCE estimator) from the task-A teacher (features only; the label spaces differ, so
  reweighting is off); InfoNCE because the default NCE estimator collapses the BN-free SmallCNN
  (see docs/methods/gacd.md),
- the same with plain-CE adversarial examples (`adv_loss=ce`),
- `pgd-at` without any teacher (the baseline).

Each is then evaluated by `robustdistill evaluate --linear-probe --structure TEACHER` (clean, FGSM,
PGD-20, CW-inf of the student's own classifier; a linear probe on its frozen features, clean and
under PGD-20 through the probe; linear CKA and correlation distance to the teacher's features).
Records go to `<out>/<label>.json`, the table to `<out>/table.md`; finished steps are skipped.

Example (the command recorded in benchmarks/results/cross-task/table.md):

    python benchmarks/cross_task.py --teacher runs/bench/teacher --out benchmarks/results/cross-task \
        --work runs/bench/cross-task
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch
from method_table import add_budget_arguments, train_seconds  # the method table's budget and timing

from robustdistill.utils import atomic_write_bytes

# label -> (command, method, extra arguments)
ENTRIES: dict[str, tuple[str, str, list[str]]] = {
    "pgd-at (no teacher)": ("train-teacher", "pgd-at", []),
    "gacd infonce": ("distill", "gacd", ["--method-opt", "estimator=infonce"]),
    "gacd infonce adv_loss=ce": (
        "distill",
        "gacd",
        ["--method-opt", "estimator=infonce", "--method-opt", "adv_loss=ce"],
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="task-A teacher run directory or weights file")
    parser.add_argument("--teacher-data", default="fashion-mnist", help="task A (for the table only)")
    parser.add_argument("--data", default="animal-mnist", help="task B: the student's data")
    parser.add_argument("--out", default="benchmarks/results/cross-task")
    parser.add_argument("--work", default="runs/bench/cross-task")
    add_budget_arguments(parser, student="smallcnn", subset=5000, epochs=5, lr=0.01)  # its recorded budget
    parser.add_argument("--n", type=int, default=1000, help="test images for the attacks and the probe")
    return parser.parse_args(argv)


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label).strip("-").replace("--", "-")


def robustdistill(*args: str) -> None:
    command = [sys.executable, "-m", "robustdistill", *args]
    print("$ " + shlex.join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def train(label: str, args: argparse.Namespace) -> Path:
    command, method, extra = ENTRIES[label]
    run_dir = Path(args.work) / slug(label)
    if (run_dir / "model.safetensors").exists():
        return run_dir
    teacher = ["--teacher", args.teacher] if command == "distill" else []
    robustdistill(
        command, "--data", args.data, "--model", args.student, "--method", method, *teacher, *extra,
        "--subset", str(args.subset), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--eps", str(args.eps),
        "--steps", str(args.steps), "--seed", str(args.seed), "--run-dir", str(run_dir), "--overwrite", "--quiet",
    )  # fmt: skip
    return run_dir


def evaluate(label: str, run_dir: Path, args: argparse.Namespace) -> dict:
    path = Path(args.out) / f"{slug(label)}.json"
    if not path.exists():
        robustdistill(
            "evaluate", "--checkpoint", str(run_dir), "--data", args.data, "--attacks", "clean,fgsm,pgd-20,cw",
            "--n", str(args.n), "--eps", str(args.eps), "--seed", str(args.seed), "--linear-probe",
            "--structure", args.teacher, "--json", str(path), "--quiet",
        )  # fmt: skip
    record = json.loads(path.read_text())
    record["train_seconds"] = train_seconds(run_dir)
    return record


def write_table(records: dict[str, dict], args: argparse.Namespace, command: str) -> Path:
    header = (
        "| student | clean | FGSM | PGD-20 | CW-inf | probe clean | probe PGD-20 | CKA clean | CKA adv "
        "| corr. distance clean | train s |"
    )
    lines = [
        f"# Cross-task transfer: teacher on {args.teacher_data}, students on {args.data} (eps {args.eps})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()} CPU, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Teacher "
        f"`{args.teacher}` (trained on {args.teacher_data}); student `{args.student}` trained {args.epochs} epochs "
        f"on the same {args.subset}-image class-balanced subset of {args.data} (seed {args.seed}), lr {args.lr}, "
        f"{args.steps}-step PGD. Accuracy (%) on a class-balanced subset of {args.n} {args.data} test images: the "
        "student's own classifier (clean, FGSM, PGD-20, CW-inf), then a linear probe fitted on its frozen features "
        "(clean, and PGD-20 through backbone + probe). CKA and correlation distance compare the student's features "
        "with the teacher's on the same task-B images (clean, and PGD-20 against the student).",
        "",
        header,
        "|---|" + "---:|" * 10,
    ]
    for label, r in records.items():
        acc, probe, structure = r["accuracy"], r["linear_probe"], r["structure"]
        cells = [100 * acc[k] for k in ("clean", "fgsm", "pgd-20", "cw")]
        cells += [100 * probe["accuracy"], 100 * probe["robust_accuracy"]]
        row = " | ".join(f"{c:.2f}" for c in cells)
        row += f" | {structure['cka_clean']:.3f} | {structure['cka_adv']:.3f}"
        row += f" | {structure['corr_dist_clean']:.3f} | {r['train_seconds']:.0f}"
        lines.append(f"| {label} | {row} |")
    path = Path(args.out) / "table.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    records = {label: evaluate(label, train(label, args), args) for label in ENTRIES}
    print(f"table: {write_table(records, args, command)}")


if __name__ == "__main__":
    main()
