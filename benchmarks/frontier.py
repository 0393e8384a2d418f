"""Cost–accuracy frontier of the evidence protocol: training compute against AutoAttack accuracy.

The points are students of the method table (`benchmarks/method_table.py`: the shipped teacher, the
full Fashion-MNIST training split less the validation split, 30 epochs, 5-step PGD, three seeds,
AutoAttack on 1 000 test images): the methods `pgd-at`, `ard`, `rslad`, `adaad` and full `paths`,
the `paths` ablations that are also cheaper (`paths-last`: only the final point of both paths;
`paths-untargeted`: one path), and the table's variants (group `variant`: perturbation reuse,
`fgsm-rs`, sampled `paths` steps, the shared forward). Train them there
(`method_table.py --only LABELS`); this script adds the pass counts and draws the frontier.

Cost, two measures:

- training seconds, from each record (wall-clock of the training epochs, each epoch's 1 000-image
  validation pass included; one thread per run, two runs sharing the two cores; the records say
  their memory layout, `channels_last`, which changes the seconds and not the arithmetic);
- counted passes: the samples that go through the forward and backward passes of the student and
  the teacher over a whole training run. Hooks count them on a replay of the run's configuration
  on `--replay-images` training images for the same epochs (`<out>/passes/<label>.json`), scaled by
  the ratio of batches per epoch: exact for fixed-cost methods, up to the random draws of
  `sample_steps`, and about 1 % low for perturbation reuse (`replay_passes`). `forward` counts every
  sample a forward call sees (attack steps, alignment, no-grad teacher calls), `backward` every
  sample a gradient flows back through the network's output for (an attack step's input gradient,
  the parameter backward of the loss);
- compute: each network's passes times its forward multiply-adds per image (counted by hooks on
  its convolutions and linear layers), summed over student and teacher: a pass costs one forward's
  multiply-adds here (a parameter backward costs about two), so this is a hardware-free proxy
  that weighs a teacher pass by the teacher's size, which the plain pass count does not.

Accuracy: AutoAttack, mean over seeds with the 95 % Student-t interval over seeds, and each
configuration's difference to full `paths` with a paired bootstrap 95 % interval over the same test
images (the method table's `paired_difference`). Output next to the method table:
`frontier.md`, `frontier.json`, `frontier.png`.

    python benchmarks/method_table.py --only paths-u-sample1,ard-reuse --threads 1
    python benchmarks/frontier.py --threads 1
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
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from method_table import (  # the method table's entries, run settings and paired differences
    ENTRIES,
    add_run_arguments,
    load_groups,
    paired_difference,
    run_config,
)
from scipy import stats
from torch import nn

import robustdistill.train
from robustdistill import models
from robustdistill.config import load_config
from robustdistill.evaluate import environment, write_record
from robustdistill.evaluate.plots import new_figure, save_png
from robustdistill.runs import load_datasets, resolve_weights, train_from_config
from robustdistill.utils import atomic_write_bytes

# the comparison whose cost the cheap configurations must beat, and the accuracy they must keep
BASELINE, REFERENCE = "ard", "paths"
LABELS = (
    "pgd-at",
    "fgsm-rs",
    "pgd-at-reuse",
    "ard",
    "ard-reuse",
    "rslad",
    "rslad-reuse",
    "adaad",
    "adaad-reuse",
    "paths",
    "paths-last",
    "paths-untargeted",
    "paths-sample1",
    "paths-u-sample1",
    "paths-u-sample2",
    "paths-u-sample1-share",
)
PASS_KEYS = tuple(f"{role}_{kind}" for role in ("student", "teacher") for kind in ("forward", "backward"))


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
        return {key: int(self.counts[key]) for key in PASS_KEYS}


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


def forward_macs(model: nn.Module, image_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of one image through the convolutions and linear layers."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * kernel
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *image_shape))
    finally:
        for handle in handles:
            handle.remove()
    return total


def replay_passes(label: str, record: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The counted passes of a full training run of `label`, from a replay on `args.replay_images` images.

    The replay has the configuration of the run behind `record` (its learning rate, epochs and
    student; the table's batch, steps and data) except its training images and no validation
    pass. The loader drops an epoch's last incomplete batch, so the counts scale by the ratio of
    full batches per epoch, `(N // B) / (replay // B)`: exact for every method whose passes per
    batch are fixed, and for `sample_steps` up to its random draws. For perturbation reuse it is
    about 1 % low: in the full run the images left out of an epoch's batches are still unattacked
    in the next one, whose batches that hold them attack with all their steps. Cached in
    `<out>/passes/<label>.json`.
    """
    path = Path(args.out) / "passes" / f"{label}.json"
    if path.exists():
        return json.loads(path.read_text())
    if args.replay_images < args.batch_size:
        raise SystemExit(f"--replay-images {args.replay_images} is less than one batch of {args.batch_size}")
    settings = argparse.Namespace(**{**vars(args), "student": record["student"]})
    with tempfile.TemporaryDirectory() as work:
        command, flags = run_config(label, 0, float(record["lr"]), int(record["epochs"]), Path(work), settings)
        datasets = load_datasets(load_config(flags=flags))
        full, shape = len(datasets.train), tuple(datasets.train.images.shape[1:])
        flags.update(subset=args.replay_images, eval_every=0, overwrite=True)
        counter = PassCounter()
        started = time.perf_counter()
        with counting_passes(counter):
            train_from_config(command, load_config(flags=flags), quiet=True)
        seconds = time.perf_counter() - started
    counted = counter.as_dict()
    scale = (full // args.batch_size) / (args.replay_images // args.batch_size)
    student = models.create(record["student"], num_classes=datasets.train.num_classes, in_channels=shape[0])
    macs = {"student": forward_macs(student, shape)}
    if "teacher" in flags:
        macs["teacher"] = forward_macs(models.load(resolve_weights(args.teacher)), shape)
    replay = {
        "label": label,
        "epochs": record["epochs"],
        "lr": record["lr"],
        "batch_size": args.batch_size,
        "replayed_images": args.replay_images,
        "training_images": full,
        "counted": counted,
        "passes": {key: round(value * scale) for key, value in counted.items()},
        "forward_macs": macs,
        "replay_seconds": seconds,
    }
    write_record(replay, path)
    return replay


# ============================================================================ table and figure


def confidence_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t interval over the seeds (half-width nan for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(half)


def total_passes(passes: dict[str, int]) -> int:
    """Forward plus backward samples of the student and the teachers."""
    return sum(int(passes[key]) for key in PASS_KEYS)


def compute(record: dict[str, Any]) -> float:
    """Multiply-adds of a `replay_passes` record: each network's passes times its forward multiply-adds."""
    passes, macs = record["passes"], record["forward_macs"]
    return float(sum((passes[f"{role}_forward"] + passes[f"{role}_backward"]) * macs.get(role, 0) for role in macs))


def summarise(groups: dict[str, list[dict[str, Any]]], passes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per label (its seeds' method-table records): accuracy (%) with 95 % intervals, seconds, passes.

    `passes` maps a label to its `replay_passes` record (a label without one has no pass columns).
    Differences to `REFERENCE` are paired over the AutoAttack images; cost ratios are to `BASELINE`.
    """
    rows: dict[str, dict[str, Any]] = {}
    for label, group in groups.items():
        autoattack, half = confidence_interval([100 * r["accuracy"]["autoattack"] for r in group])
        clean, clean_half = confidence_interval([100 * r["accuracy"]["clean"] for r in group])
        replay = passes.get(label, {})
        counted = replay.get("passes")
        layouts = sorted({str(r.get("channels_last", "off")) for r in group})
        rows[label] = {
            "method": group[0]["method"],
            "method_opts": group[0]["method_opts"],
            "group": group[0].get("group", ""),
            "seeds": sorted(r["seed"] for r in group),
            "autoattack": autoattack,
            "autoattack_ci95": half,
            "clean": clean,
            "clean_ci95": clean_half,
            "seconds": statistics.fmean(r["train_seconds"] for r in group),
            "channels_last": "/".join(layouts),
            "passes": total_passes(counted) if counted else math.nan,
            "student_passes": counted["student_forward"] + counted["student_backward"] if counted else math.nan,
            "compute": compute(replay) if counted else math.nan,
            "aa_n": group[0]["n_examples"]["autoattack"],
        }
    base = rows.get(BASELINE)
    for label, row in rows.items():
        row["seconds_over_baseline"] = row["seconds"] / base["seconds"] if base else math.nan
        row["passes_over_baseline"] = row["passes"] / base["passes"] if base else math.nan
        row["compute_over_baseline"] = row["compute"] / base["compute"] if base else math.nan
        compared = REFERENCE in groups and label != REFERENCE
        found = paired_difference(groups[label], groups[REFERENCE], "autoattack") if compared else None
        row["vs_reference"] = None if found is None else [100 * v for v in found]
        row["within_reference_ci"] = None if row["vs_reference"] is None else row["vs_reference"][2] >= 0.0
    return rows


def _fmt_ci(mean: float, half: float) -> str:
    return f"{mean:.1f}" if math.isnan(half) else f"{mean:.1f} ± {half:.1f}"


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def markdown(rows: dict[str, dict[str, Any]], header: list[str]) -> str:
    """The frontier table: one row per configuration, cheapest (by compute, then seconds) first."""
    lines = [
        *header,
        f"| configuration | group | options | seeds | AutoAttack % (95 % CI) | clean % (95 % CI) | "
        f"Δ AutoAttack vs {REFERENCE} [95 % CI] | train s | s / {BASELINE} | layout | passes (M samples) | "
        f"passes / {BASELINE} | student passes (M) | compute (T multiply-adds) | compute / {BASELINE} | "
        f"not below {REFERENCE} (CI reaches 0) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|",
    ]

    def cost(item: tuple[str, dict[str, Any]]) -> tuple[float, float]:
        work = item[1]["compute"]
        return (math.inf if math.isnan(work) else work, item[1]["seconds"])

    for label, row in sorted(rows.items(), key=cost):
        shown = "; ".join(f"{k}={v}" for k, v in row["method_opts"].items()) or "(defaults)"
        versus = "-" if row["vs_reference"] is None else "{:+.2f} [{:+.2f}, {:+.2f}]".format(*row["vs_reference"])
        within = {None: "-", True: "yes", False: "no"}[row["within_reference_ci"]]
        lines.append(
            f"| {label} | {row['group']} | `{shown}` | {len(row['seeds'])} | "
            f"{_fmt_ci(row['autoattack'], row['autoattack_ci95'])} | {_fmt_ci(row['clean'], row['clean_ci95'])} | "
            f"{versus} | {row['seconds']:.0f} | {_fmt(row['seconds_over_baseline'], '.2f')} | "
            f"{row['channels_last']} | {_fmt(row['passes'] / 1e6, '.1f')} | "
            f"{_fmt(row['passes_over_baseline'], '.2f')} | {_fmt(row['student_passes'] / 1e6, '.1f')} | "
            f"{_fmt(row['compute'] / 1e12, '.2f')} | {_fmt(row['compute_over_baseline'], '.2f')} | {within} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict[str, Any]], path: Path) -> Path:
    """AutoAttack accuracy (95 % CI bars) against training seconds and against compute."""
    figure = new_figure(11, 4.5)
    axes = figure.subplots(1, 2, sharey=True)
    for axis, key, xlabel in (
        (axes[0], "seconds", "training time (s)"),
        (axes[1], "compute", "compute (T multiply-adds, student + teacher)"),
    ):
        for label, row in rows.items():
            if math.isnan(row[key]):
                continue
            x = row[key] / (1e12 if key == "compute" else 1.0)
            error = None if math.isnan(row["autoattack_ci95"]) else row["autoattack_ci95"]
            marker = "s" if label.startswith(REFERENCE) else ("^" if label.endswith("-reuse") else "o")
            axis.errorbar(x, row["autoattack"], yerr=error, fmt=marker, capsize=3)
            axis.annotate(label, (x, row["autoattack"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        axis.set_xlabel(xlabel)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("AutoAttack accuracy (%), mean over seeds")
    figure.suptitle("Cost-accuracy frontier (bars: 95 % CI over seeds)")
    return save_png(figure, path)


def write_report(
    groups: dict[str, list[dict[str, Any]]],
    passes: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    command: str,
) -> tuple[Path, Path]:
    rows = summarise(groups, passes)
    out = Path(args.out)
    missing = [label for label in args.labels if label not in groups]
    header = [
        f"# Cost-accuracy frontier (evidence protocol): {args.data}, eps {args.eps}",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()} CPU, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. The method "
        f"table's students (`{args.student}`, teacher `{args.teacher}`, {args.epochs} epochs, {args.steps}-step "
        "PGD; variants at their base method's learning rate). AutoAttack (standard) on the same "
        + ", ".join(sorted({str(r["aa_n"]) for r in rows.values()}))
        + " test images for every row: mean over the seeds with the 95 % Student-t interval over seeds, and "
        f"the paired bootstrap difference to full `{REFERENCE}`. Train s: wall-clock of the training epochs "
        "(mean over seeds; one thread per run, two runs on two cores); layout: `channels_last` of the runs "
        "(on: the same arithmetic, faster). Passes: forward + backward samples of student and teacher over "
        f"the whole run, counted on a {args.replay_images}-image replay and scaled to the training split; "
        "compute: each network's passes times its forward multiply-adds per image. Rows sorted by compute.",
        "",
        *([f"Not trained yet: {', '.join(missing)}.", ""] if missing else []),
    ]
    write_record(rows, out / "frontier.json")
    table = out / "frontier.md"
    atomic_write_bytes(table, markdown(rows, header).encode())
    return table, plot(rows, out / "frontier.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)  # the method table's settings, so a replay is configured as its runs were
    parser.add_argument("--only", help="comma-separated labels (default: the frontier's)")
    parser.add_argument("--replay-images", type=int, default=512, help="training images of the pass-count replay")
    parser.add_argument("--table-only", action="store_true", help="no replays: only the labels with pass records")
    args = parser.parse_args(argv)
    args.labels = args.only.split(",") if args.only else list(LABELS)
    unknown = sorted(set(args.labels) - set(ENTRIES))
    if unknown:
        parser.error(f"unknown labels {unknown}; the method table knows: {', '.join(ENTRIES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/frontier.py " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    groups = {label: records for label, records in load_groups(Path(args.out)).items() if label in args.labels}
    if not groups:
        raise SystemExit(f"no method-table records of {', '.join(args.labels)} under {Path(args.out) / 'runs'}")
    passes: dict[str, dict[str, Any]] = {}
    for label in groups:
        path = Path(args.out) / "passes" / f"{label}.json"
        if path.exists() or not args.table_only:
            passes[label] = replay_passes(label, groups[label][0], args)
    table, figure = write_report(groups, passes, args, command)
    print(f"table: {table}; figure: {figure}; environment: {environment()}")


if __name__ == "__main__":
    main()
