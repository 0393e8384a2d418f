"""The method table of the evidence protocol: every method, three seeds, one teacher, one student.

Protocol (docs/results.md explains why each choice):

- teacher `zoo:fashion-mnist-pgd-at` (shipped with the package), student `lenet-small`
  (16x fewer multiply-adds); the whole Fashion-MNIST training split less its 5000-image validation
  split (`--val-size`), eps 0.1, the same epochs, batch, schedule and `--steps`-step PGD everywhere;
- tuning: each method's learning rate is chosen from `--lr-grid` on the validation split (seed 0,
  `--tune-epochs` epochs, highest final validation PGD-10 accuracy; clean accuracy for the non-robust
  `standard` reference, whose objective it is), the same rule for every method: the grid's top is
  doubled while it wins (`--lr-extend`), so no choice sits at the grid's edge; a wider grid
  trains only its new learning rates (`--tune-only` tunes without training seeds), and a seed trained
  at a learning rate the tuning no longer chooses is refused, not reused;
- three seeds (`--seeds`) of the full run with that learning rate; convergence: that validation
  accuracy no longer rising (the mean of the last 3 epochs at most 0.5 points above the mean of the 3
  before; `converged` in each record, recomputed from its curve for the table); a seed that collapsed
  (final validation clean accuracy within a point of chance) is named in the table and counted;
- variants (group `variant`: perturbation reuse, fgsm-rs, cheaper `paths` configurations) are trained
  at their base method's learning rate for `benchmarks/frontier.py`'s cost-accuracy frontier;
- test: clean and PGD-20 on all 10 000 test images, CW-inf on `--cw-n` and standard AutoAttack on
  `--aa-n` class-balanced test images (seed 0: the same images for every student).

One JSON record per trained student (`<out>/runs/<label>-seed<S>.json`: method, options, seed, lr,
weights hash, training seconds, validation curve, per-image correctness per attack), its weights
(`<out>/weights/<label>-seed<S>.safetensors` + `.json`, so every figure can be re-measured), and one
record per tuning (`<out>/tuning/<label>.json`); `<out>/table.md` holds mean ± std over seeds and, per method, the
difference to `pgd-at` and to the best baseline with a paired bootstrap 95 % interval. Finished records
are skipped on a rerun, so the table can be built in slices (`--only`) over several sessions.

    python benchmarks/method_table.py --only pgd-at,rslad --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustdistill import data as data_lib
from robustdistill import methods, models
from robustdistill.config import load_config
from robustdistill.errors import TrainingError
from robustdistill.evaluate import attack_suite, write_record
from robustdistill.evaluate.compare import decode_correct, encode_correct, mean_std, paired_bootstrap
from robustdistill.evaluate.plots import new_figure, save_png
from robustdistill.runs import resolve_weights, train_from_config
from robustdistill.train import read_metrics
from robustdistill.train.setup import uses_channels_last
from robustdistill.utils import atomic_write_bytes, resolve_device

BASELINE, HEADLINE, ABLATION, REFERENCE, VARIANT = "baseline", "headline", "ablation", "reference", "variant"
# label -> (method, method options, group)
ENTRIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "standard": ("standard", {}, REFERENCE),
    "pgd-at": ("pgd-at", {}, BASELINE),
    "trades": ("trades", {}, BASELINE),
    "mart": ("mart", {}, BASELINE),
    "kd": ("kd", {}, BASELINE),
    "ard": ("ard", {}, BASELINE),
    "iad": ("iad", {"warmup_epochs": 2}, BASELINE),
    "rslad": ("rslad", {}, BASELINE),
    "adaad": ("adaad", {}, BASELINE),
    "mtard": ("mtard", {}, BASELINE),
    "igdm": ("igdm", {}, BASELINE),
    "saad": ("saad", {}, BASELINE),
    "dgad": ("dgad", {}, BASELINE),
    "peeraid": ("peeraid", {}, BASELINE),
    "paths": ("paths", {}, HEADLINE),
    "gacd-nce": ("gacd", {"estimator": "nce"}, HEADLINE),
    "gacd-infonce": ("gacd", {"estimator": "infonce"}, HEADLINE),
    "paths-untargeted": ("paths", {"branches": "untargeted"}, ABLATION),
    "paths-targeted": ("paths", {"branches": "targeted"}, ABLATION),
    "paths-uniform": ("paths", {"weighting": "uniform"}, ABLATION),
    "paths-last": ("paths", {"weighting": "last"}, ABLATION),
    "gacd-nce-noreweight": ("gacd", {"estimator": "nce", "reweight": "none"}, ABLATION),
    "gacd-infonce-noreweight": ("gacd", {"estimator": "infonce", "reweight": "none"}, ABLATION),
    # cheaper configurations of a method (benchmarks/frontier.py), trained at their base's learning rate
    "fgsm-rs": ("fgsm-rs", {}, VARIANT),
    "pgd-at-reuse": ("pgd-at", {"reuse_steps": 1}, VARIANT),
    "ard-reuse": ("ard", {"reuse_steps": 1}, VARIANT),
    "rslad-reuse": ("rslad", {"reuse_steps": 1}, VARIANT),
    "adaad-reuse": ("adaad", {"reuse_steps": 1}, VARIANT),
    "paths-sample1": ("paths", {"sample_steps": 1}, VARIANT),
    "paths-u-sample1": ("paths", {"branches": "untargeted", "sample_steps": 1}, VARIANT),
    "paths-u-sample2": ("paths", {"branches": "untargeted", "sample_steps": 2}, VARIANT),
    "paths-u-sample1-share": ("paths", {"branches": "untargeted", "sample_steps": 1, "share_forward": True}, VARIANT),
}
# a variant's learning rate is its base's (no tuning of its own): the frontier compares cost at fixed settings
VARIANT_BASE = {
    label: "pgd-at" if label == "fgsm-rs" else ENTRIES[label][0] for label, e in ENTRIES.items() if e[2] == VARIANT
}
ATTACK_COLUMNS = ("clean", "pgd-20", "cw", "autoattack")
SELECTION_KEYS = {"clean": "eval_clean", "pgd10": "eval_pgd-10"}
SELECTION_NAMES = {"clean": "clean", "pgd10": "PGD-10"}
EVAL_SEED = 0


BUDGET = {"student": "lenet-small", "subset": None, "epochs": 30, "batch_size": 128, "lr": 0.05, "steps": 5}


def add_budget_arguments(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """The training budget every student of a benchmark shares (cross_task.py passes its own defaults)."""
    budget = {**BUDGET, **defaults}
    parser.add_argument("--student", default=budget["student"])
    parser.add_argument("--subset", type=int, default=budget["subset"], help="training images (default: all)")
    parser.add_argument("--epochs", type=int, default=budget["epochs"])
    parser.add_argument("--batch-size", type=int, default=budget["batch_size"])
    parser.add_argument("--lr", type=float, default=budget["lr"])
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=budget["steps"], help="PGD steps of every inner maximisation")
    parser.add_argument("--seed", type=int, default=0)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """What `run_config` reads: the table's teacher, data, budget, split and layout (frontier.py shares them)."""
    parser.add_argument("--teacher", default="zoo:fashion-mnist-pgd-at", help="teacher run directory, file or zoo:NAME")
    parser.add_argument("--natural-teacher", help="natural teacher for mtard (skipped without it)")
    parser.add_argument("--out", default="benchmarks/results/fashion-mnist-evidence")
    parser.add_argument("--work", default="runs/evidence", help="where the training runs are written")
    parser.add_argument("--data", default="fashion-mnist")
    add_budget_arguments(parser)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument(
        "--channels-last",
        choices=("on", "off", "auto"),
        default="on",
        help="memory layout of the training runs (the same arithmetic; on: steps about 1.1x faster here)",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    parser.add_argument("--only", help="comma-separated entry labels (default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lr-grid", default="0.01,0.05,0.1", help="learning rates tried on the validation split")
    parser.add_argument(
        "--lr-extend", type=int, default=2, help="while the largest rate tried wins, try twice it (at most N times)"
    )
    parser.add_argument("--tune-epochs", type=int, default=10)
    parser.add_argument("--cw-n", type=int, default=1000, help="test images for CW-inf")
    parser.add_argument("--aa-n", type=int, default=1000, help="test images for standard AutoAttack")
    parser.add_argument("--evaluate-teacher", action="store_true", help="also measure the teacher (runs/teacher.json)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild table.md from the records")
    parser.add_argument("--tune-only", action="store_true", help="choose the learning rates; train no seed")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.lr_grid = [float(v) for v in str(args.lr_grid).split(",") if v.strip()]
    return args


def run_config(
    label: str, seed: int, lr: float, epochs: int, run_dir: Path, args: argparse.Namespace
) -> tuple[str, dict[str, Any]]:
    """The command (`train-teacher` or `distill`) and the flags of one training run of `label`."""
    method, options, _ = ENTRIES[label]
    flags: dict[str, Any] = {
        "data": args.data,
        "model": args.student,
        "method": method,
        "method_opts": options,
        "val_size": args.val_size,
        "subset": args.subset,
        "epochs": epochs,
        "batch_size": args.batch_size,
        "lr": lr,
        "schedule": "cosine",
        "eps": args.eps,
        "steps": args.steps,
        "seed": seed,
        "run_dir": str(run_dir),
        "eval_n": 1000,
        "eval_attacks": ["clean", "pgd-10"],
        "checkpoint_every": 0,
        "channels_last": args.channels_last,
    }
    spec = methods.spec(method)
    if spec.needs_teacher:
        flags["teacher"] = args.teacher
    if spec.needs_natural_teacher:
        flags["natural_teacher"] = args.natural_teacher
    return ("train-teacher" if spec.role == "objective" else "distill"), flags


def train(label: str, seed: int, lr: float, epochs: int, run_dir: Path, args: argparse.Namespace) -> Path:
    """One training run through the `train-teacher` / `distill` code path (resumed if interrupted)."""
    if (run_dir / "model.safetensors").exists():
        return run_dir
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    command, flags = run_config(label, seed, lr, epochs, run_dir, args)
    train_from_config(command, load_config(flags={**flags, "overwrite": not resume}), resume=resume, quiet=True)
    return run_dir


def selection_measure(group: str) -> str:
    """What tunes and judges a run: validation clean accuracy for the non-robust reference, PGD-10 otherwise."""
    return "clean" if group == REFERENCE else "pgd10"


def validation_curve(run_dir: Path, measure: str = "pgd10") -> list[float]:
    """The per-epoch validation accuracy of a run under `measure` (`clean` or `pgd10`)."""
    key = SELECTION_KEYS[measure]
    return [r[key] for r in read_metrics(run_dir) if r.get("kind") == "epoch" and key in r]


def selection_curve(record: dict[str, Any]) -> list[float]:
    """The validation curve a record's convergence is judged on."""
    return list(record.get(f"val_curve_{selection_measure(record.get('group', ''))}", []))


def window_means(curve: list[float], window: int = 3) -> tuple[float, float]:
    """The mean of the `window` epochs before the last `window`, and the mean of the last `window`."""
    return float(np.mean(curve[-2 * window : -window])), float(np.mean(curve[-window:]))


def converged(curve: list[float], window: int = 3, tolerance: float = 0.005) -> bool:
    """No longer rising: the mean of the last `window` epochs at most `tolerance` above the `window` before."""
    if len(curve) < 2 * window:
        return False
    before, last = window_means(curve, window)
    return last - before <= tolerance


COLLAPSE_MARGIN = 0.01  # a final validation clean accuracy this close to chance (1 / C) is a collapse


def collapsed(record: dict[str, Any], num_classes: int) -> bool:
    """A run that ended predicting (about) one class: final validation clean accuracy within the margin of 1 / C."""
    curve = record.get("val_curve_clean", [])
    return bool(curve) and curve[-1] <= 1 / num_classes + COLLAPSE_MARGIN


def tuning_score(label: str, lr: float, measure: str, args: argparse.Namespace) -> float:
    """The final validation accuracy of `label`'s tuning run at `lr`; -1 if the run diverged."""
    run_dir = Path(args.work) / "tune" / f"{label}-lr{lr:g}"
    try:
        curve = validation_curve(train(label, 0, lr, args.tune_epochs, run_dir, args), measure)
    except TrainingError as error:
        print(f"{label} at lr {lr:g} diverged: {error}", file=sys.stderr)
        return -1.0
    return curve[-1] if curve and math.isfinite(curve[-1]) else -1.0


def tuned_lr(label: str, args: argparse.Namespace) -> float:
    """The learning rate of `label`, chosen on the validation split (recorded in `<out>/tuning/`).

    The grid is `--lr-grid`, doubled at its top while the largest learning rate wins (at most
    `--lr-extend` times), so no method's choice is the edge of the grid unless the cap stops it.
    The record keeps every learning rate measured so far: a wider grid trains only the new ones,
    and the choice is the best of the grid; a run that diverges scores -1. A variant (a cheaper
    configuration of a method) takes its base method's learning rate.
    """
    if label in VARIANT_BASE:
        return tuned_lr(VARIANT_BASE[label], args)
    if len(args.lr_grid) == 1:
        return args.lr_grid[0]
    path = Path(args.out) / "tuning" / f"{label}.json"
    measure = selection_measure(ENTRIES[label][2])
    key = f"val_{measure}_by_lr"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    scores: dict[str, float] = dict(recorded.get(key, {}))
    grid = list(args.lr_grid)
    while True:
        for lr in grid:
            if f"{lr:g}" not in scores:
                scores[f"{lr:g}"] = tuning_score(label, lr, measure, args)
        chosen = float(max((f"{lr:g}" for lr in grid), key=scores.__getitem__))
        if chosen < max(grid) or len(grid) - len(args.lr_grid) >= args.lr_extend:
            break
        grid.append(2 * max(grid))
    record = {
        "label": label,
        "criterion": f"final validation {SELECTION_NAMES[measure]} accuracy after {args.tune_epochs} epochs, seed 0",
        key: dict(sorted(scores.items(), key=lambda item: float(item[0]))),
        "lr_grid": grid,
        "chosen_lr": chosen,
        "val_size": args.val_size,
    }
    if record != recorded:
        write_record(record, path)
    return chosen


def trained_lr(label: str, seed: int, run_dir: Path, args: argparse.Namespace) -> float | None:
    """The learning rate a seed's record or (partial) run was trained at, or None if it has neither."""
    path = Path(args.out) / "runs" / f"{label}-seed{seed}.json"
    if path.exists():
        return float(json.loads(path.read_text())["lr"])
    if (run_dir / "config.yaml").exists():
        return float(load_config(path=run_dir / "config.yaml").lr)
    return None


def check_lr(label: str, seed: int, lr: float, run_dir: Path, args: argparse.Namespace) -> None:
    """Refuse to reuse or resume a seed trained at another learning rate than the one now tuned."""
    trained = trained_lr(label, seed, run_dir, args)
    if trained is not None and not math.isclose(trained, lr):
        raise SystemExit(
            f"{label} seed {seed} was trained at lr {trained:g}, but the tuning now chooses {lr:g} "
            f"({Path(args.out) / 'tuning' / f'{label}.json'}): move "
            f"{Path(args.out) / 'runs' / f'{label}-seed{seed}.json'}, its weights "
            f"and {run_dir} aside to retrain it"
        )


def measure(model: torch.nn.Module, test: data_lib.ArrayDataset, args: argparse.Namespace) -> dict[str, Any]:
    """Clean and PGD-20 on the whole test split, CW and AutoAttack on their class-balanced subsets."""
    subsets = {"clean": None, "pgd-20": None, "cw": args.cw_n, "autoattack": args.aa_n}
    out: dict[str, Any] = {"accuracy": {}, "n_examples": {}, "attacks": {}, "seconds": {}, "per_sample": {}}
    for attack, n in subsets.items():
        if n == 0:
            continue
        record = attack_suite(model, test, attacks=[attack], eps=args.eps, n=n, seed=EVAL_SEED, progress=False)
        out["accuracy"][attack] = record["accuracy"][attack]
        out["n_examples"][attack] = record["n_examples"]
        out["attacks"][attack] = record["attacks"][attack]
        out["seconds"][attack] = record["seconds"][attack]
        out["per_sample"][attack] = encode_correct(record["per_sample_worst_case"])
        out["environment"] = record["environment"]
    return out


def train_seconds(run_dir: Path) -> float:
    """Seconds spent in the training epochs of a run, from its metrics log."""
    return sum(r.get("seconds", 0.0) for r in read_metrics(run_dir) if r.get("kind") == "epoch")


def layout(run_dir: Path) -> str:
    """`on` if a run trained in the channels_last memory layout, else `off` (`auto` resolved on its device)."""
    cfg = load_config(path=run_dir / "config.yaml")
    return "on" if uses_channels_last(resolve_device(cfg.device), cfg) else "off"


def weights_sha256(weights: Path) -> str:
    return str(json.loads(weights.with_suffix(".json").read_text())["sha256"])


def evaluate(label: str, seed: int, lr: float, run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.out) / "runs" / f"{label}-seed{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    weights = run_dir / "model.safetensors"
    record = measure(models.load(weights).eval(), data_lib.load(args.data, "test"), args)
    method, options, group = ENTRIES[label]
    curves = {f"val_curve_{m}": validation_curve(run_dir, m) for m in SELECTION_KEYS}
    record.update(
        label=label,
        method=method,
        method_opts=options,
        group=group,
        seed=seed,
        lr=lr,
        epochs=args.epochs,
        student=args.student,
        teacher=args.teacher if methods.spec(method).needs_teacher else None,
        weights_sha256=weights_sha256(weights),
        train_seconds=train_seconds(run_dir),
        channels_last=layout(run_dir),
        **curves,
        run_dir=str(run_dir),
    )
    record["converged"] = converged(selection_curve(record))
    write_record(record, path)
    keep_weights(weights, Path(args.out) / "weights" / f"{label}-seed{seed}.safetensors")
    return record


def keep_weights(weights: Path, destination: Path) -> None:
    """Copy a student's weights and their spec (renamed to match) next to its record."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, destination)
    spec = json.loads(weights.with_suffix(".json").read_text())
    write_record({**spec, "weights": destination.name}, destination.with_suffix(".json"))


def evaluate_teacher(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.out) / "runs" / "teacher.json"
    if path.exists():
        return json.loads(path.read_text())
    weights = resolve_weights(args.teacher)
    record = measure(models.load(weights).eval(), data_lib.load(args.data, "test"), args)
    record.update(
        label="teacher", group="teacher", seed=None, teacher=args.teacher, weights_sha256=weights_sha256(weights)
    )
    write_record(record, path)
    return record


def _cell(values: list[float]) -> str:
    mean, std = mean_std([100 * v for v in values])
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _stacked(records: list[dict[str, Any]], attack: str) -> np.ndarray | None:
    rows = [decode_correct(r["per_sample"][attack]) for r in records if attack in r.get("per_sample", {})]
    return np.stack(rows) if rows and len({row.size for row in rows}) == 1 else None


def paired_difference(
    a: list[dict[str, Any]], b: list[dict[str, Any]], attack: str
) -> tuple[float, float, float] | None:
    """`a` minus `b` in `attack` accuracy (fraction) with its paired bootstrap 95 % interval, or None.

    Each image's correctness is averaged over a label's seeds; None when either side lacks the
    attack's per-image record or they were measured on different images.
    """
    stack_a, stack_b = _stacked(a, attack), _stacked(b, attack)
    if stack_a is None or stack_b is None or stack_a.shape[1] != stack_b.shape[1]:
        return None
    diff, low, high = paired_bootstrap(stack_a, stack_b)
    return float(diff), float(low), float(high)


def _difference(a: list[dict[str, Any]], b: list[dict[str, Any]], attack: str) -> str:
    found = paired_difference(a, b, attack)
    if found is None:
        return "-"
    diff, low, high = found
    return f"{100 * diff:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def table_rows(groups: dict[str, list[dict[str, Any]]], key_attack: str) -> tuple[list[str], str | None]:
    """The markdown rows of `groups` (label -> its seeds' records) and the best baseline's label."""

    def score(label: str) -> float:
        values = [r["accuracy"].get(key_attack, math.nan) for r in groups[label]]
        return float(np.mean(values))

    baselines = [label for label in groups if ENTRIES.get(label, ("", {}, ""))[2] == BASELINE]
    best = max(baselines, key=score) if baselines else None
    header = ["model", "group", "seeds", *[f"{a} (n)" for a in ATTACK_COLUMNS], "Δ vs pgd-at", "Δ vs best baseline"]
    lines = ["| " + " | ".join(header) + " |", "|---|---|---:|" + "---:|" * (len(ATTACK_COLUMNS) + 2)]
    for label, records in groups.items():
        cells = []
        for attack in ATTACK_COLUMNS:
            values = [r["accuracy"][attack] for r in records if attack in r["accuracy"]]
            n = records[0].get("n_examples", {}).get(attack) if isinstance(records[0].get("n_examples"), dict) else None
            cells.append(f"{_cell(values)} ({n})" if values else "-")
        versus_pgd = (
            _difference(records, groups["pgd-at"], key_attack) if "pgd-at" in groups and label != "pgd-at" else "-"
        )
        versus_best = _difference(records, groups[best], key_attack) if best and label != best else "-"
        group = records[0].get("group", "")
        seeds = sum(1 for r in records if r.get("seed") is not None) or "-"
        lines.append(f"| {label} | {group} | {seeds} | " + " | ".join(cells) + f" | {versus_pgd} | {versus_best} |")
    return lines, best


def write_table(groups: dict[str, list[dict[str, Any]]], args: argparse.Namespace, command: str) -> Path:
    key_attack = "autoattack" if any("autoattack" in r["accuracy"] for rs in groups.values() for r in rs) else "pgd-20"
    rows, best = table_rows(groups, key_attack)
    costs = {label: [r["train_seconds"] for r in rs if "train_seconds" in r] for label, rs in groups.items()}
    unconverged = [
        f"{r['label']} seed {r['seed']}"
        for rs in groups.values()
        for r in rs
        if selection_curve(r) and not converged(selection_curve(r))
    ]
    num_classes = data_lib.get_spec(args.data).num_classes or data_lib.load(args.data, "test").num_classes
    dead = [f"{r['label']} seed {r['seed']}" for rs in groups.values() for r in rs if collapsed(r, num_classes)]

    lines = [
        f"# Method table (evidence protocol): {args.data}, eps {args.eps}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()} CPU ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d')}. Student `{args.student}`, teacher `{args.teacher}`; every method trained "
        f"{args.epochs} epochs (cosine) on the training split less a {args.val_size}-image validation split, "
        f"batch {args.batch_size}, {args.steps}-step PGD (step eps/4), learning rate chosen per method from "
        f"{args.lr_grid} (doubled at the top while the largest wins, at most {args.lr_extend} times; `tuning/`) "
        f"on the validation split ({args.tune_epochs} epochs, seed 0). Accuracy (%) as mean ± std "
        f"over seeds; n = test images of the column (the same images for every model). Δ: difference in "
        f"{key_attack} accuracy (points) with a paired bootstrap 95 % interval over those images, the correctness "
        f"of each image averaged over seeds. Best baseline by {key_attack}: `{best}`.",
        "",
        *rows,
        "",
        "Training seconds per run (mean over seeds; one thread per run, two runs sharing two cores; `cl`: "
        "trained with channels_last weights; augmented one-channel batches are channels_last-strided, so the other "
        "runs' activations were NHWC too, and steps differ by about 1.1x): "
        + ", ".join(
            f"{label} {np.mean(v):.0f}" + (" cl" if all(r.get("channels_last") == "on" for r in groups[label]) else "")
            for label, v in costs.items()
            if v
        ),
        "",
        f"Total training seconds of these records: {sum(sum(v) for v in costs.values()):.0f}.",
        "",
        "Runs not converged by the criterion (validation PGD-10, clean for the reference, no longer rising: the "
        "mean of the last 3 epochs at most 0.5 points above the mean of the 3 before): "
        + (", ".join(unconverged) or "none")
        + ".",
        "",
        f"Runs collapsed to a constant prediction (final validation clean accuracy within "
        f"{100 * COLLAPSE_MARGIN:g} point of chance, "
        f"1/{num_classes}; counted in the mean and std above, as every seed is): " + (", ".join(dead) or "none") + ".",
        "",
        *curve_rows(groups),
    ]
    if any(r.get("val_curve_pgd10") for rs in groups.values() for r in rs):
        plot_curves(groups, Path(args.out) / "val_curves.png")
    path = Path(args.out) / "table.md"
    atomic_write_bytes(path, "\n".join(lines).encode())
    return path


def curve_rows(groups: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per run: its selection curve every 5 epochs and the two 3-epoch means the criterion compares."""
    runs = [r for rs in groups.values() for r in rs if selection_curve(r)]
    if not runs:
        return []
    epochs = max(len(selection_curve(r)) for r in runs)
    marks = sorted({*range(5, epochs + 1, 5), epochs})
    lines = [
        "Validation accuracy (%) per run on 1000 validation images, PGD-10 (clean for the reference, which is "
        "tuned and judged on clean accuracy); figure of the PGD-10 curves: `val_curves.png`:",
        "",
        "| run | measure | "
        + " | ".join(f"ep {e}" for e in marks)
        + " | mean of the 3 epochs before the last 3 | mean of the last 3 |",
        "|---|---|" + "---:|" * (len(marks) + 2),
    ]
    for r in runs:
        curve = [100 * v for v in selection_curve(r)]
        measure = SELECTION_NAMES[selection_measure(r.get("group", ""))]
        cells = [f"{curve[e - 1]:.1f}" if e <= len(curve) else "-" for e in marks]
        before, last = window_means(curve)
        lines.append(
            f"| {r['label']} seed {r['seed']} | {measure} | " + " | ".join(cells) + f" | {before:.2f} | {last:.2f} |"
        )
    return [*lines, ""]


def plot_curves(groups: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """The per-epoch validation PGD-10 accuracy of every robust run (not the reference), one colour per label."""
    figure = new_figure(6.0, 3.6)
    axes = figure.add_subplot(1, 1, 1)
    for index, (label, records) in enumerate(groups.items()):
        robust = [r for r in records if r.get("val_curve_pgd10") and r.get("group") != REFERENCE]
        for j, r in enumerate(robust):
            curve = [100 * v for v in r["val_curve_pgd10"]]
            axes.plot(range(1, len(curve) + 1), curve, color=f"C{index % 10}", label=label if j == 0 else None)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation PGD-10 accuracy (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    return save_png(figure, path)


def load_groups(out: Path) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((out / "runs").glob("*.json")):
        record = json.loads(path.read_text())
        groups.setdefault(record["label"], []).append(record)
    order = ["teacher", *ENTRIES]
    return {label: groups[label] for label in order if label in groups}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = list(argv if argv is not None else sys.argv[1:])
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *raw])
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    labels = args.only.split(",") if args.only else list(ENTRIES)
    unknown = sorted(set(labels) - set(ENTRIES))
    if unknown:
        raise SystemExit(f"unknown labels {unknown}; known: {', '.join(ENTRIES)}")
    if args.evaluate_teacher and not args.table_only:
        evaluate_teacher(args)
    for label in [] if args.table_only else labels:
        if methods.spec(ENTRIES[label][0]).needs_natural_teacher and not args.natural_teacher:
            print(f"skipping {label}: no --natural-teacher", file=sys.stderr)
            continue
        lr = tuned_lr(label, args)
        for seed in [] if args.tune_only else args.seeds:
            started = time.perf_counter()
            run_dir = Path(args.work) / f"{label}-seed{seed}"
            check_lr(label, seed, lr, run_dir, args)
            run_dir = train(label, seed, lr, args.epochs, run_dir, args)
            record = evaluate(label, seed, lr, run_dir, args)
            shown = ", ".join(f"{a} {100 * v:.2f}" for a, v in record["accuracy"].items())
            print(f"{label} seed {seed} (lr {lr:g}): {shown} [{time.perf_counter() - started:.0f} s]", flush=True)
    if not args.tune_only:  # no seed trained: the table is unchanged
        print(f"table: {write_table(load_groups(out), args, command)}")


if __name__ == "__main__":
    main()
