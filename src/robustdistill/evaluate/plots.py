"""Figures of a run: training curves, eps sweeps, PATHS weight profiles, adversarial examples.

Every function draws one PNG (dpi 120, title, axis labels, legend, grid, tight layout) and returns
its path. Figures are built as `matplotlib.figure.Figure` objects on an Agg canvas, so nothing here
depends on or changes pyplot's global state; the Agg backend is selected on import unless pyplot
was already imported by the caller (a notebook keeps its backend).

    >>> plot_training_curves({"teacher": read_metrics("runs/t"), "rslad": read_metrics("runs/s")}, "curves.png")
    >>> plot_eps_sweep({"teacher": sweep_t, "rslad": sweep_s}, "sweep.png", reference_eps=8 / 255)
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    matplotlib.use("Agg")

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from torch import Tensor, nn

from robustdistill.data import ArrayDataset, subset

__all__ = [
    "DPI",
    "AdversarialBatch",
    "adversarial_batch",
    "branch_label",
    "epoch_records",
    "paths_profile",
    "plot_adversarial_examples",
    "plot_eps_sweep",
    "plot_paths_weights",
    "plot_training_curves",
]

DPI = 120
TEACHER_COLOR = "black"
CORRECT_COLOR = "#1a9641"
WRONG_COLOR = "#d7191c"
_PATHS_KEY = re.compile(r"^paths/(weight|kl)_([A-Za-z]+)/step_(\d+)$")
_BRANCHES = {"u": "untargeted", "t": "targeted"}


# --------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike[str], *, rect: Sequence[float] | None = None) -> Path:
    """Tight layout, then write the PNG through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout(rect=rect)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        figure.savefig(temp, dpi=DPI, format="png")
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    return path


def _number(value: Any) -> float:
    """A float for plotting; strings written for NaN/inf (`"nan"`) and missing values become NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


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


def epoch_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-epoch records of a metrics log, in epoch order (the last one wins for a repeated epoch)."""
    by_epoch: dict[int, Mapping[str, Any]] = {}
    for record in records:
        if record.get("kind", "epoch") == "epoch" and "epoch" in record:
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def _line_style(key: str) -> str:
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
    figure = _figure(11.0, 4.2)
    ax_loss, ax_acc = figure.subplots(1, 2)
    styles_used: dict[str, str] = {}
    drawn = False
    for label in labels:
        epochs = epoch_records(runs[label])
        if not epochs:
            continue
        x = [int(r["epoch"]) for r in epochs]
        marker = "o" if len(x) <= 30 else None
        loss = [_number(r.get("train_loss")) for r in epochs]
        if any(not math.isnan(v) for v in loss):
            ax_loss.plot(x, loss, color=colors[label], marker=marker, markersize=3, label=label)
            drawn = True
        for key in _accuracy_keys(epochs):
            points = [(e, 100 * _number(r.get(key))) for e, r in zip(x, epochs, strict=True)]
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
    return _save(figure, path)


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
        found = [s.get("reference_eps") for s in sweeps.values() if s.get("reference_eps")]
        reference_eps = float(found[0]) if found else None
    attack = next((s["attack"] for s in sweeps.values() if isinstance(s.get("attack"), dict)), {})
    norm = "L2" if str(attack.get("norm", "linf")).lower() == "l2" else "L-inf"
    scale = 255.0 if norm == "L-inf" and _per_255(reference_eps) else 1.0
    colors = _colors(labels, teacher)
    figure = _figure(6.8, 4.6)
    ax = figure.subplots()
    for label in labels:
        record = sweeps[label]
        xs = [scale * float(e) for e in record["eps"]]
        ys = [100 * _number(a) for a in record["accuracy"]]
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
    return _save(figure, path)


# --------------------------------------------------------------------------- PATHS weights


def branch_label(name: str) -> str:
    return _BRANCHES.get(name, name)


def paths_profile(record: Mapping[str, Any], quantity: str = "weight") -> dict[str, tuple[list[int], list[float]]]:
    """`{branch: (step indices, values)}` of `paths/<quantity>_<branch>/step_<k>` keys in one record."""
    found: dict[str, dict[int, float]] = {}
    for key, value in record.items():
        match = _PATHS_KEY.match(key)
        if match and match.group(1) == quantity:
            found.setdefault(match.group(2), {})[int(match.group(3))] = _number(value)
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
    figure = _figure(11.0 if has_kl else 6.5, 4.3)
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
        value = _number(last.get(f"paths/teacher_error_{branch}"))
        if not math.isnan(value):
            extras.append(f"teacher error on {branch_label(branch)} path {100 * value:.0f}%")
    success = _number(last.get("paths/target_success"))
    if not math.isnan(success):
        extras.append(f"target success {100 * success:.0f}%")
    figure.suptitle(title + (f"\n{'; '.join(extras)}" if extras else ""), fontsize=11)
    return _save(figure, path)


# --------------------------------------------------------------------------- adversarial examples


def _attack_description(attack: Callable[..., Tensor]) -> str:
    name = type(attack).__name__
    eps = getattr(attack, "eps", None)
    steps = getattr(attack, "steps", None)
    parts = [f"{name}-{steps}" if isinstance(steps, int) and name == "PGD" else name]
    if isinstance(eps, (int, float)):
        parts.append(f"eps={eps:.4g}")
    return ", ".join(parts)


def _short(name: str, limit: int = 12) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


@dataclass(frozen=True)
class AdversarialBatch:
    """Clean images, their adversarial versions, labels and both predictions (all on the CPU)."""

    x: Tensor
    x_adv: Tensor
    y: Tensor
    pred_clean: Tensor
    pred_adv: Tensor

    @property
    def flipped_to_wrong(self) -> int:
        return int(((self.pred_clean == self.y) & (self.pred_adv != self.y)).sum())

    @property
    def flipped_to_right(self) -> int:
        """Wrong clean predictions that the attack made right: PGD raises the loss of the true class, which
        need not keep a wrong prediction wrong (the loss can rise while the arg-max moves to the label)."""
        return int(((self.pred_clean != self.y) & (self.pred_adv == self.y)).sum())


def adversarial_batch(
    model: nn.Module,
    data: ArrayDataset,
    attack: Callable[[Tensor, Tensor], Tensor],
    n: int = 8,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> AdversarialBatch:
    """Attack a fixed class-balanced subset of `n` images (`subset(data, n, seed)`); the model's mode is kept."""
    from robustdistill.utils import resolve_device

    device = device if isinstance(device, torch.device) else resolve_device(device)
    chosen = subset(data, n, seed=seed)
    x = chosen.images.float().div(255).to(device)
    y = chosen.labels.to(device)
    was_training = model.training
    model.eval().to(device)
    try:
        x_adv = attack(x, y).detach()
        with torch.no_grad():
            pred_clean = model(x).argmax(dim=1).cpu()
            pred_adv = model(x_adv).argmax(dim=1).cpu()
    finally:
        model.train(was_training)
    return AdversarialBatch(x.cpu(), x_adv.cpu(), y.cpu(), pred_clean, pred_adv)


def plot_adversarial_examples(
    model: nn.Module,
    data: ArrayDataset,
    attack: Callable[[Tensor, Tensor], Tensor],
    path: str | os.PathLike[str],
    n: int = 8,
    class_names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    title: str | None = None,
    batch: AdversarialBatch | None = None,
) -> Path:
    """A 2-row grid: `n` clean test images (top) and their adversarial versions (bottom).

    Each column is titled with the true label; under each image the model's prediction, green when
    correct and red when wrong. The images are a fixed class-balanced subset (`subset(data, n, seed)`);
    `attack(x, y) -> x_adv` is any attack object (for example `attacks.PGD(model, eps=...)`), or pass
    the `batch` that `adversarial_batch` returned. 1-channel images are shown in grey scale; the title
    counts the predictions the attack flipped, wrong to right included.
    """
    batch = batch or adversarial_batch(model, data, attack, n, seed=seed, device=device)
    names = list(class_names or data.classes or [str(i) for i in range(data.num_classes)])
    x, x_adv, y, pred_clean, pred_adv = batch.x, batch.x_adv, batch.y, batch.pred_clean, batch.pred_adv
    count = x.shape[0]
    cell = 1.45  # inches per image; each row also needs room for the labels above and below it
    figure = _figure(max(4.0, cell * count + 0.9), 2 * (cell + 0.6) + 1.2)
    axes = figure.subplots(2, count, squeeze=False)
    for row, (images, preds) in enumerate(((x, pred_clean), (x_adv, pred_adv))):
        for col in range(count):
            ax = axes[row][col]
            image = images[col]
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            correct = int(preds[col]) == int(y[col])
            ax.set_xlabel(f"pred: {_short(names[int(preds[col])])}", color=CORRECT_COLOR if correct else WRONG_COLOR)
            if row == 0:
                ax.set_title(f"true: {_short(names[int(y[col])])}", fontsize=9)
            if col == 0:
                ax.set_ylabel("clean" if row == 0 else "adversarial")
    correct_clean = int((pred_clean == y).sum())
    summary = f"the attack flips {batch.flipped_to_wrong} of the {correct_clean} correct clean predictions"
    if batch.flipped_to_right:
        summary += f", and turns {batch.flipped_to_right} wrong one(s) right (it maximises the loss, not the error)"
    figure.suptitle(
        (title or f"Clean (top) and adversarial (bottom) test images, {_attack_description(attack)}") + "\n" + summary,
        fontsize=10,
    )
    figure.legend(
        handles=[Patch(color=CORRECT_COLOR, label="prediction correct"), Patch(color=WRONG_COLOR, label="wrong")],
        loc="lower center",
        ncol=2,
        fontsize=8,
    )
    return _save(figure, path, rect=(0, 0.07, 1, 1))
