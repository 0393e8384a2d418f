"""Figures of a run: training curves, eps sweeps, PATHS weight profiles (adversarial examples: `examples`).

Every function draws one PNG (dpi 120, title, axis labels, legend, grid, tight layout), writes it
atomically and returns its path. Figures are built as `matplotlib.figure.Figure` objects on an Agg
canvas, so nothing here depends on or changes pyplot's global state; the Agg backend is selected on
import unless pyplot was already imported by the caller (a notebook keeps its backend).

    >>> plot_training_curves({"teacher": read_metrics("runs/t"), "rslad": read_metrics("runs/s")}, "curves.png")
    >>> plot_eps_sweep({"teacher": sweep_t, "rslad": sweep_s}, "sweep.png", reference_eps=8 / 255)
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from robustdistill.evaluate.discovery import epoch_records
from robustdistill.evaluate.table import number
from robustdistill.utils import atomic_write_bytes

__all__ = [
    "DPI",
    "branch_label",
    "new_figure",
    "paths_profile",
    "plot_eps_sweep",
    "plot_paths_weights",
    "plot_training_curves",
    "save_png",
]

DPI = 120
TEACHER_COLOR = "black"
_PATHS_KEY = re.compile(r"^paths/(weight|kl)_([A-Za-z]+)/step_(\d+)$")
_BRANCHES = {"u": "untargeted", "t": "targeted"}


# --------------------------------------------------------------------------- helpers


def new_figure(width: float, height: float) -> Figure:
    """A figure of `width` x `height` inches at `DPI`, on its own Agg canvas (pyplot is never touched)."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save_png(
    figure: Figure, path: str | os.PathLike[str], *, rect: tuple[float, float, float, float] | None = None
) -> Path:
    """Tight layout, then write the PNG atomically (`utils.atomic_write_bytes`)."""
    path = Path(path)
    figure.tight_layout(rect=rect)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=DPI, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _colors(labels: Sequence[str], teacher: str | None = None) -> dict[str, Any]:
    """One colour per label (tab10 cycle); the teacher is drawn in black."""
    cycle = matplotlib.colormaps["tab10"]
    colors: dict[str, Any] = {}
    index = 0
    for label in labels:
        if label == teacher:
            colors[label] = TEACHER_COLOR
        else:
            colors[label] = cycle(index % 10)
            index += 1
    return colors


def _line_style(key: str) -> Literal["-", "--", ":"]:
    if key == "eval_clean":
        return "-"
    if key.startswith("eval_pgd"):
        return "--"
    return ":"


def _accuracy_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """`eval_<attack>` keys, clean first, then PGD, then the others; the worst case is left out."""
    keys: list[str] = []
    for record in records:
        for key in record:
            if key.startswith("eval_") and key != "eval_worst_case" and key not in keys:
                keys.append(key)
    return sorted(keys, key=lambda k: (k != "eval_clean", not k.startswith("eval_pgd"), k))


# --------------------------------------------------------------------------- training curves


def plot_training_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike[str],
    *,
    teacher: str | None = None,
    title: str = "Training curves",
) -> Path:
    """Training loss (left) and clean / robust accuracy (right) per epoch, one colour per run.

    `runs` maps a label to the run's metrics records (`read_metrics(run_dir)`); only `kind: "epoch"`
    records are used. Accuracy: `eval_clean` solid, `eval_pgd-*` dashed, other attacks dotted.
    """
    labels = list(runs)
    colors = _colors(labels, teacher)
    figure = new_figure(11.0, 4.2)
    ax_loss, ax_acc = figure.subplots(1, 2)
    styles_used: dict[str, Literal["-", "--", ":"]] = {}
    drawn = False
    for label in labels:
        epochs = epoch_records(runs[label])
        if not epochs:
            continue
        x = [int(r["epoch"]) for r in epochs]
        marker = "o" if len(x) <= 30 else None
        loss = [number(r.get("train_loss")) for r in epochs]
        if any(not math.isnan(v) for v in loss):
            ax_loss.plot(x, loss, color=colors[label], marker=marker, markersize=3, label=label)
            drawn = True
        for key in _accuracy_keys(epochs):
            points = [(e, 100 * number(r.get(key))) for e, r in zip(x, epochs, strict=True)]
            points = [(e, v) for e, v in points if not math.isnan(v)]
            if not points:
                continue
            style = _line_style(key)
            styles_used.setdefault(key[len("eval_") :], style)
            xs, ys = zip(*points, strict=True)
            ax_acc.plot(xs, ys, color=colors[label], linestyle=style, marker=marker, markersize=3)
            drawn = True
    ax_loss.set_title("training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train_loss (mean over the epoch)")
    ax_acc.set_title("test accuracy during training")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not drawn:
        ax_loss.text(0.5, 0.5, "no epoch records", transform=ax_loss.transAxes, ha="center", va="center")
    run_handles = [Line2D([], [], color=colors[label], label=label) for label in labels]
    ax_loss.legend(handles=run_handles, title="run", fontsize=8)
    style_handles = [Line2D([], [], color="grey", linestyle=s, label=name) for name, s in styles_used.items()]
    if style_handles:
        ax_acc.legend(handles=style_handles, title="attack", fontsize=8)
    figure.suptitle(title)
    return save_png(figure, path)


# --------------------------------------------------------------------------- eps sweep


def _per_255(reference_eps: float | None) -> bool:
    """True when eps is a small multiple of 1/255 (CIFAR-style), so the axis reads better in 1/255 units."""
    if reference_eps is None or reference_eps <= 0 or reference_eps >= 0.1:
        return False
    scaled = reference_eps * 255
    return abs(scaled - round(scaled)) < 1e-4


def plot_eps_sweep(
    sweeps: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    reference_eps: float | None = None,
    teacher: str | None = "teacher",
    chance: float | None = None,
    title: str = "Robust accuracy against attack radius (PGD)",
) -> Path:
    """Accuracy (%) against eps, one line per model (teacher in black); x = 0 is clean accuracy.

    `sweeps` maps a label to an `eps_sweep` record; a shaded band shows ± one binomial standard error
    `sqrt(p (1 - p) / n)` of each point. A dotted vertical line marks `reference_eps`
    (the training eps; defaults to the records' `reference_eps`), a dotted horizontal line `chance`
    (in %, e.g. `100 / num_classes`).
    """
    labels = list(sweeps)
    if reference_eps is None:
        found = [s["reference_eps"] for s in sweeps.values() if s.get("reference_eps")]
        reference_eps = float(found[0]) if found else None
    attack: Mapping[str, Any] = next((s["attack"] for s in sweeps.values() if isinstance(s.get("attack"), dict)), {})
    norm = "L2" if str(attack.get("norm", "linf")).lower() == "l2" else "L-inf"
    scale = 255.0 if norm == "L-inf" and _per_255(reference_eps) else 1.0
    colors = _colors(labels, teacher)
    figure = new_figure(6.8, 4.6)
    ax = figure.subplots()
    for label in labels:
        record = sweeps[label]
        xs = [scale * float(e) for e in record["eps"]]
        ys = [100 * number(a) for a in record["accuracy"]]
        is_teacher = label == teacher
        n_points = record.get("n_examples")
        if n_points:
            band = [100 * math.sqrt(max(v / 100 * (1 - v / 100), 0.0) / n_points) for v in ys]
            low = [v - b for v, b in zip(ys, band, strict=True)]
            high = [v + b for v, b in zip(ys, band, strict=True)]
            ax.fill_between(xs, low, high, color=colors[label], alpha=0.15, linewidth=0)
        ax.plot(
            xs,
            ys,
            color=colors[label],
            marker="s" if is_teacher else "o",
            markersize=4,
            linewidth=2.2 if is_teacher else 1.6,
            label=f"{label} (teacher)" if is_teacher and "teacher" not in label else label,
        )
    if reference_eps is not None:
        ax.axvline(scale * reference_eps, color="grey", linestyle=":", linewidth=1.2, label="training eps")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1.0, alpha=0.7, label="chance")
    ax.set_ylim(-2, 102)
    ax.set_xlabel(f"eps ({norm} radius" + (", in units of 1/255)" if scale != 1.0 else ")"))
    ax.set_ylabel("accuracy under PGD (%)")
    steps = attack.get("steps")
    n = next((s.get("n_examples") for s in sweeps.values() if s.get("n_examples")), None)
    detail = ", ".join(part for part in (f"PGD-{steps}" if steps else "", f"n={n}" if n else "") if part)
    bands = "; bands: ± 1 standard error" if n else ""
    ax.set_title(f"{title}" + (f"\n({detail}; eps 0 = clean accuracy{bands})" if detail else ""), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(figure, path)


# --------------------------------------------------------------------------- PATHS weights


def branch_label(name: str) -> str:
    return _BRANCHES.get(name, name)


def paths_profile(record: Mapping[str, Any], quantity: str = "weight") -> dict[str, tuple[list[int], list[float]]]:
    """`{branch: (step indices, values)}` of `paths/<quantity>_<branch>/step_<k>` keys in one record."""
    found: dict[str, dict[int, float]] = {}
    for key, value in record.items():
        match = _PATHS_KEY.match(key)
        if match and match.group(1) == quantity:
            found.setdefault(match.group(2), {})[int(match.group(3))] = number(value)
    order = sorted(found, key=lambda b: (b not in _BRANCHES, list(_BRANCHES).index(b) if b in _BRANCHES else 0, b))
    return {b: (sorted(found[b]), [found[b][k] for k in sorted(found[b])]) for b in order}


def _scaled(
    profile: dict[str, tuple[list[int], list[float]]], quantity: str
) -> dict[str, tuple[list[int], list[float]]]:
    """Weights as a ratio to the uniform weight `1 / k` of their branch (1 = uniform); KL unchanged."""
    if quantity != "weight":
        return profile
    return {b: (steps, [v * len(steps) for v in values]) for b, (steps, values) in profile.items()}


def plot_paths_weights(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "PATHS: adaptive weight per step of the adversarial path",
) -> Path:
    """Mean adaptive weight (and, when logged, mean teacher-student KL) against the step index.

    One line per branch (untargeted / targeted) from the last epoch that logged `paths/weight_*` keys,
    faint lines for earlier epochs. Weights are shown as a ratio to the uniform weight `1 / k` (k aligned
    steps) on an axis from 0, so 1 (dashed) is uniform and near-uniform profiles look flat; the KL axis
    is scaled to the last epoch.
    Raises ValueError when no record has such keys.
    """
    epochs = [r for r in epoch_records(records) if paths_profile(r)]
    if not epochs:
        raise ValueError("no record holds paths/weight_<branch>/step_<k> keys; was the run trained with 'paths'?")
    last = epochs[-1]
    has_kl = bool(paths_profile(last, "kl"))
    figure = new_figure(11.0 if has_kl else 6.5, 4.3)
    axes = list(figure.subplots(1, 2)) if has_kl else [figure.subplots()]
    cycle = matplotlib.colormaps["tab10"]
    quantities = [("weight", "weight / uniform weight (1/k)"), ("kl", "mean KL(teacher || student)")][: len(axes)]
    for ax, (quantity, ylabel) in zip(axes, quantities, strict=True):
        profile = _scaled(paths_profile(last, quantity), quantity)
        colors = {b: cycle(i) for i, b in enumerate(profile)}
        for record in epochs[:-1]:
            for branch, (steps, values) in _scaled(paths_profile(record, quantity), quantity).items():
                ax.plot(steps, values, color=colors.get(branch, "grey"), alpha=0.2, linewidth=1.0)
        for branch, (steps, values) in profile.items():
            ax.plot(steps, values, color=colors[branch], marker="o", linewidth=2.0, label=branch_label(branch))
        shown = [v for _, values in profile.values() for v in values if not math.isnan(v)]
        top = max(shown, default=1.0)
        if quantity == "weight":
            ax.axhline(1.0, color="grey", linestyle="--", linewidth=1.0, label="uniform")
            ax.set_ylim(0.0, max(2.0, 1.15 * top))  # from 0: near-uniform weights stay near the dashed line
        else:
            ax.set_ylim(0.0, 1.25 * top if top > 0 else 1.0)  # the last epoch fills the panel; earlier ones may clip
        if len(epochs) > 1:
            first, last_faint = epochs[0]["epoch"], epochs[-2]["epoch"]
            span = f"epoch {first}" if first == last_faint else f"epochs {first}-{last_faint}"
            ax.plot([], [], color="grey", alpha=0.3, label=span)
        ax.set_xlabel("step index k along the path (1 = first PGD iterate)")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)  # near-uniform weights read as 0.5, not 1e-6 + 5e-1
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, title="branch")
        ax.set_title(f"{ylabel} (epoch {last['epoch']})", fontsize=10)
    extras = []
    for branch in ("u", "t"):
        value = number(last.get(f"paths/teacher_error_{branch}"))
        if not math.isnan(value):
            extras.append(f"teacher error on {branch_label(branch)} path {100 * value:.0f}%")
    success = number(last.get("paths/target_success"))
    if not math.isnan(success):
        extras.append(f"target success {100 * success:.0f}%")
    figure.suptitle(title + (f"\n{'; '.join(extras)}" if extras else ""), fontsize=11)
    return save_png(figure, path)
