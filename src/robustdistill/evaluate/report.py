"""Turn a run directory (one run, or a collection of runs such as `runs/demo/`) into a report.

    >>> from robustdistill.evaluate.report import write_report
    >>> write_report("runs/demo")            # -> runs/demo/report.md, PNGs in runs/demo/figures/

A *run* is a directory with `metrics.jsonl` or `model.safetensors` (plus `config.yaml`, optional
`results.json`). A *collection* is a directory whose sub-directories are runs; its teacher is the
sub-run named `teacher`, else the one the students' `teacher` setting points at, else one trained
without a teacher by a teacher method (standard, pgd-at, trades, mart).

The report holds: a header with dataset and eps, a table of the runs, the results table (from each
run's `results.json`; without any, the last in-training evaluation), and figures with captions:
training curves, an eps sweep of every model (cached in `sweep.json`, keyed on the sweep settings and
each weights file's size + mtime, or, when those changed, a digest of its tensors: re-running the report
is fast until a model changes), the PATHS weight profile of any `paths` run, and adversarial examples of
the best student. See docs/reading-results.md.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch import nn

import robustdistill
from robustdistill import data as data_lib
from robustdistill import models as model_lib
from robustdistill.attacks import PGD
from robustdistill.config import default_eps
from robustdistill.errors import ConfigError, RobustDistillError
from robustdistill.evaluate import plots, table
from robustdistill.evaluate import sweep as sweep_lib
from robustdistill.evaluate.record import write_record
from robustdistill.runtime.metrics import read_metrics
from robustdistill.utils import atomic_write_bytes, file_sha256, resolve_device

__all__ = [
    "SWEEP_CACHE",
    "TEACHER_METHODS",
    "Run",
    "discover_runs",
    "is_run",
    "weights_digest",
    "write_report",
]

TEACHER_METHODS = ("standard", "pgd-at", "fgsm-rs", "trades", "mart")
PATHS_METHODS = ("paths", "dong2024")
SWEEP_CACHE = "sweep.json"
CACHE_VERSION = 1
FIGURES = "figures"
WEIGHTS = ("model_swa.safetensors", "model.safetensors", "model_ema.safetensors")  # as runs.resolve_weights


@dataclass
class Run:
    """One run directory as the report sees it."""

    label: str
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    results: dict[str, Any] | None
    role: str = "run"  # teacher | student | baseline | run
    weights: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.config.get("method") or "").lower()

    @property
    def teacher_ref(self) -> str | None:
        value = self.config.get("teacher")
        return str(value) if value else None


def is_run(path: str | Path) -> bool:
    """True for a directory holding `metrics.jsonl` or `model.safetensors`."""
    path = Path(path)
    return path.is_dir() and ((path / "metrics.jsonl").is_file() or (path / "model.safetensors").is_file())


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _load_run(path: Path, label: str) -> Run:
    run = Run(
        label=label,
        path=path,
        config=_read_yaml(path / "config.yaml"),
        metrics=[],
        results=_read_json(path / "results.json"),
    )
    try:
        run.metrics = read_metrics(path)
    except (OSError, json.JSONDecodeError) as error:
        run.notes.append(f"metrics.jsonl of {label} could not be read ({error}); no training curves for it.")
    run.weights = next((path / name for name in WEIGHTS if (path / name).is_file()), None)
    if run.results is not None and not isinstance(run.results.get("accuracy"), dict):
        run.notes.append(f"results.json of {label} has no 'accuracy' mapping; left out of the table.")
        run.results = None
    return run


def _points_at(reference: str, run: Run) -> bool:
    """Whether a student's `teacher` setting (a run directory or a weights file) names `run`."""
    target = Path(reference)
    if target.suffix in (".safetensors", ".json", ".pt", ".pth"):
        target = target.parent
    try:
        if target.resolve() == run.path.resolve():
            return True
    except OSError:
        pass
    return target.name == run.path.name


def _assign_roles(runs: list[Run]) -> Run | None:
    """Mark the teacher, the students (trained from a teacher) and the baselines; returns the teacher."""
    teacher = next((r for r in runs if r.label == "teacher"), None)
    if teacher is None:
        references = [r.teacher_ref for r in runs if r.teacher_ref]
        teacher = next((r for r in runs if any(_points_at(ref, r) for ref in references)), None)
    if teacher is None:
        teacher = next((r for r in runs if not r.teacher_ref and r.method in TEACHER_METHODS), None)
    for run in runs:
        if run is teacher:
            run.role = "teacher"
        else:
            run.role = "student" if run.teacher_ref else "baseline"
    return teacher


def discover_runs(run_dir: str | Path) -> tuple[list[Run], Run | None, bool]:
    """`(runs, teacher, is_collection)` for a single run or a directory of runs (teacher first)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory '{run_dir}' does not exist; pass a run or a directory of runs")
    if is_run(run_dir):
        run = _load_run(run_dir, run_dir.resolve().name)
        run.role = "student" if run.teacher_ref else "run"
        return [run], None, False
    children = sorted(p for p in run_dir.iterdir() if is_run(p))
    if not children:
        raise ConfigError(
            f"'{run_dir}' is neither a run (no metrics.jsonl or model.safetensors) nor a directory of runs"
        )
    runs = [_load_run(p, p.name) for p in children]
    teacher = _assign_roles(runs)
    if teacher is not None:
        runs.remove(teacher)
        runs.insert(0, teacher)
    return runs, teacher, True


# --------------------------------------------------------------------------- settings of a run


def _eps_of(config: dict[str, Any]) -> float:
    eps = config.get("eps")
    if isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0:
        return float(eps)
    return default_eps(str(config.get("data", "")))


def _format_norm(norm: str) -> str:
    return {"linf": "L-inf", "l2": "L2"}.get(norm.lower(), norm)


def _format_eps(eps: float) -> str:
    scaled = eps * 255
    if eps < 0.1 and abs(scaled - round(scaled)) < 1e-4:
        return f"{round(scaled)}/255 ({eps:.4g})"
    return f"{eps:.4g}"


class _DataCache:
    """Test splits by (name, data_dir), loaded once; failures are remembered as notes."""

    def __init__(self, data_dir: str | Path | None) -> None:
        self.data_dir = data_dir
        self.loaded: dict[tuple[str, str | None], data_lib.ArrayDataset | str] = {}

    def get(self, config: dict[str, Any]) -> data_lib.ArrayDataset | str:
        name = config.get("data")
        if not name:
            return "its config.yaml names no dataset ('data')"
        directory = self.data_dir if self.data_dir is not None else config.get("data_dir")
        key = (str(name), None if directory is None else str(directory))
        if key not in self.loaded:
            try:
                self.loaded[key] = data_lib.load(str(name), "test", data_dir=directory)
            except RobustDistillError as error:
                self.loaded[key] = f"the test split of '{name}' could not be loaded ({error})"
        return self.loaded[key]


# --------------------------------------------------------------------------- sweep cache


def _sweep_key(run: Run, settings: dict[str, Any]) -> dict[str, Any]:
    assert run.weights is not None
    stat = run.weights.stat()
    return {"weights": run.weights.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, **settings}


def weights_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a safetensors file's tensors: its header with sorted keys, then the data bytes.

    Unlike the hash of the file, it does not change when the same weights are saved again (the
    safetensors writer does not keep the order of metadata keys). Other files: the file's SHA-256.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        size = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        header = None
        if 0 < size < 100_000_000:
            try:
                header = json.loads(handle.read(size))
            except (UnicodeDecodeError, json.JSONDecodeError):
                header = None
        if isinstance(header, dict):
            digest.update(json.dumps(header, sort_keys=True).encode())
        else:
            return file_sha256(path)
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _read_cache(path: Path) -> dict[str, Any]:
    cache = _read_json(path)
    if not cache or cache.get("version") != CACHE_VERSION or not isinstance(cache.get("runs"), dict):
        return {}
    return cache["runs"]


def _cached_sweep(entry: Any, key: dict[str, Any], weights: Path) -> dict[str, Any] | None:
    """The cached record when the settings match and the weights are unchanged (same stat, or same hash)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("record"), dict):
        return None
    old = entry.get("key", {})
    fixed = [k for k in key if k not in ("size", "mtime_ns")]
    if any(old.get(k) != key[k] for k in fixed):
        return None
    if old.get("size") == key["size"] and old.get("mtime_ns") == key["mtime_ns"]:
        return entry["record"]
    if old.get("size") == key["size"] and old.get("digest") and old["digest"] == weights_digest(weights):
        return entry["record"]
    return None


# --------------------------------------------------------------------------- tables


def _accuracy_table(rows: list[tuple[str, str, dict[str, Any]]], extra: str | None) -> str:
    """Markdown table: one row per run, one column per attack, accuracy % ± error and images per column.

    `rows` are `(label, role, record)` with a record shaped like `evaluate.run`'s (`accuracy`, optionally
    `n_examples`, `attacks`, `worst_case_over`, `accuracy_by_seed`). With two or more non-teacher rows,
    a column's best non-teacher value is in bold only when it beats every other one beyond the noise.
    `extra` names a last column read from each record (`epoch`).
    """
    records = {label: record for label, _, record in rows}
    names = table.columns(records)
    titles = [table.column_title(name, records) for name in names]
    grid = [[table.cell(record, name) for name in names] for _, _, record in rows]
    texts = [
        ["-" if c is None else c.text() + ("" if ", n=" in titles[j] or c.n is None else f" (n={c.n})") for j, c in
         enumerate(line)]
        for line in grid
    ]  # fmt: skip
    students = [i for i, (_, role, _) in enumerate(rows) if role != "teacher"]
    if len(students) > 1:
        for j in range(len(names)):
            best = table.leader([grid[i][j] for i in students])
            if best is not None:
                texts[students[best]][j] = f"**{texts[students[best]][j]}**"
    header = ["run", "role", *titles, *([extra] if extra else [])]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for (label, role, record), cells in zip(rows, texts, strict=True):
        last = [str(record.get(extra, "-"))] if extra else []
        lines.append(f"| {label} | {role} | " + " | ".join([*cells, *last]) + " |")
    return "\n".join(lines) + "\n"


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _last_eval(run: Run) -> tuple[int | None, dict[str, float]]:
    """`(epoch, {attack: accuracy})` of the last epoch record with in-training evaluation keys."""
    epochs = plots.epoch_records(run.metrics)
    for record in reversed(epochs):
        found = {k[len("eval_") :]: _as_float(v) for k, v in record.items() if k.startswith("eval_")}
        if found:
            return int(record["epoch"]), found
    return None, {}


def _robust_score(accuracy: dict[str, Any]) -> float:
    """Worst-case accuracy, else the lowest accuracy under attack, else clean accuracy."""
    if "worst_case" in accuracy and not math.isnan(_as_float(accuracy["worst_case"])):
        return _as_float(accuracy["worst_case"])
    attacked = [_as_float(v) for k, v in accuracy.items() if k != "clean" and not math.isnan(_as_float(v))]
    return min(attacked) if attacked else _as_float(accuracy.get("clean"))


def _sweep_score(record: dict[str, Any] | None, eps: float) -> float:
    """Sweep accuracy at `eps`: exact on the grid (odd `points`), linearly interpolated between points."""
    if not record or not record.get("eps"):
        return math.nan
    return float(np.interp(eps, [float(e) for e in record["eps"]], [_as_float(a) for a in record["accuracy"]]))


def _best_student(runs: list[Run], sweeps: dict[str, dict[str, Any]], eps: float) -> Run | None:
    """Among runs with weights: the students (else the non-teachers, else all) with the best robust score."""
    with_weights = [r for r in runs if r.weights is not None]
    pool = (
        [r for r in with_weights if r.role == "student"]
        or [r for r in with_weights if r.role != "teacher"]
        or with_weights
    )
    if not pool:
        return None

    # Scores from different sources (full evaluation, sweep subset, in-training subset) are not comparable:
    # rank by the first source every candidate has, else by whatever each one has.
    sources = (
        lambda r: _robust_score(r.results["accuracy"]) if r.results else math.nan,
        lambda r: _sweep_score(sweeps.get(r.label), eps),
        lambda r: _robust_score(_last_eval(r)[1]) if _last_eval(r)[1] else math.nan,
    )
    table = [[source(run) for source in sources] for run in pool]
    common = next((i for i in range(len(sources)) if all(not math.isnan(row[i]) for row in table)), None)

    def score(index: int) -> float:
        row = table[index]
        if common is not None:
            return row[common]
        return next((value for value in row if not math.isnan(value)), -1.0)

    return pool[max(range(len(pool)), key=score)]  # max keeps the first of equal scores


# --------------------------------------------------------------------------- the report


def _file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def _has_paths_keys(run: Run) -> bool:
    return any(plots.paths_profile(r) for r in plots.epoch_records(run.metrics))


@dataclass
class Figure:
    heading: str
    file: str
    caption: str


class _Report:
    """State shared by the sections of one report: runs, threat model, data, loaded models, notes."""

    def __init__(self, run_dir: Path, *, data_dir: str | Path | None, device: str | None, progress: bool) -> None:
        from rich.console import Console

        self.run_dir = run_dir
        self.runs, self.teacher, self.collection = discover_runs(run_dir)
        self.figures_dir = run_dir / FIGURES
        self.device = resolve_device(device)
        self.progress = progress
        self.console = Console(stderr=True, quiet=not progress)
        self.notes: list[str] = [note for run in self.runs for note in run.notes]
        self.figures: list[Figure] = []
        self.sweeps: dict[str, dict[str, Any]] = {}
        primary = self.teacher or self.runs[0]
        self.primary = primary
        self.eps = _eps_of(primary.config)
        self.norm = str(primary.config.get("norm") or "linf")
        self.dataset_name = str(primary.config.get("data") or "unknown")
        self._data = _DataCache(data_dir)
        found = self._data.get(primary.config)
        self.primary_data = found if isinstance(found, data_lib.ArrayDataset) else None
        self._models: dict[str, nn.Module | None] = {}

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def model_of(self, run: Run) -> nn.Module | None:
        """The run's model, loaded once (None, with a note, when missing or unreadable)."""
        if run.label not in self._models:
            self._models[run.label] = None
            if run.weights is None:
                self.note(f"{run.label} has no model.safetensors: no sweep or examples for it.")
            else:
                try:
                    self._models[run.label] = model_lib.load(run.weights, map_location=self.device)
                except RobustDistillError as error:
                    self.note(f"the model of {run.label} could not be loaded ({error})")
        return self._models[run.label]

    def data_of(self, run: Run) -> data_lib.ArrayDataset | None:
        """The test split named by the run's config (the primary run's when it names none)."""
        found = self._data.get(run.config if run.config.get("data") else self.primary.config)
        if isinstance(found, str):
            self.note(f"{run.label}: {found}")
            return None
        return found

    # ------------------------------------------------------------------- sections

    def training_curves(self) -> None:
        curves = {run.label: run.metrics for run in self.runs if plots.epoch_records(run.metrics)}
        if not curves:
            self.note("no run has epoch records in metrics.jsonl: no training curves.")
            return
        file = plots.plot_training_curves(
            curves,
            self.figures_dir / "training_curves.png",
            teacher=self.teacher.label if self.teacher else None,
            title=f"Training curves ({self.dataset_name}, eps {_format_eps(self.eps)})",
        )
        attacked = sorted(
            {
                key[len("eval_") :]
                for run in self.runs
                for record in plots.epoch_records(run.metrics)
                for key in record
                if key.startswith("eval_") and key not in ("eval_clean", "eval_worst_case")
            }
        )
        self.figures.append(
            Figure(
                "Training curves",
                file.name,
                "Training loss (left) and test accuracy on the in-training evaluation subset (right) per epoch, "
                "one colour per run: solid lines are clean accuracy and dashed lines accuracy under "
                + (", ".join(attacked) if attacked else "PGD")
                + ", so the vertical gap between a run's two lines is its robustness gap, and a dashed line that "
                "peaks and then falls while the loss keeps dropping is robust overfitting.",
            )
        )

    def eps_sweeps(self, *, n: int, points: int, steps: int, seed: int) -> None:
        """Sweep every model with weights (reusing `sweep.json` where valid), then plot them together."""
        settings = {"eps": self.eps, "points": points, "n": n, "steps": steps, "seed": seed, "norm": self.norm}
        cache_path = self.run_dir / SWEEP_CACHE
        cache = _read_cache(cache_path)
        new_cache: dict[str, Any] = {}
        for run in self.runs:
            if run.weights is None:
                self.note(f"{run.label} has no model.safetensors: left out of the eps sweep.")
                continue
            data = self.data_of(run)
            if data is None:
                continue
            key = _sweep_key(run, {**settings, "data": data.name, "split": data.split})
            record = _cached_sweep(cache.get(run.label), key, run.weights)
            if record is not None:
                self.console.print(f"eps sweep of {run.label}: cached in {cache_path.name}")
                digest = cache[run.label]["key"].get("digest")
            else:
                model = self.model_of(run)
                if model is None:
                    continue
                self.console.print(f"eps sweep of {run.label}: {points} radii, PGD-{steps}, {n} images")
                record = sweep_lib.eps_sweep(
                    model,
                    data,
                    eps=self.eps,
                    points=points,
                    n=n,
                    steps=steps,
                    seed=seed,
                    norm=self.norm,
                    device=self.device,
                    progress=self.progress,
                )
                digest = weights_digest(run.weights)
            new_cache[run.label] = {"key": {**key, "digest": digest}, "record": record}
            self.sweeps[run.label] = record
        if new_cache != cache:
            write_record({"version": CACHE_VERSION, "runs": new_cache}, cache_path)
        if not self.sweeps:
            return
        labels = {
            label: label if record.get("dataset") in (None, self.dataset_name) else f"{label} ({record['dataset']})"
            for label, record in self.sweeps.items()
        }
        teacher = self.teacher.label if self.teacher else None
        file = plots.plot_eps_sweep(
            {labels[k]: v for k, v in self.sweeps.items()},
            self.figures_dir / "eps_sweep.png",
            reference_eps=self.eps,
            teacher=labels.get(teacher) if teacher else None,
            chance=100.0 / self.primary_data.num_classes if self.primary_data is not None else None,
            title=f"Accuracy against attack radius ({self.dataset_name})",
        )
        masking = self._stronger_than_teacher()
        for label in masking:
            self.note(
                f"{label} is more robust than its teacher at 2 eps in the eps sweep, beyond the noise: a student "
                "rarely beats its teacher at large radii, so check for gradient masking (AutoAttack, more PGD "
                "steps or restarts, a black-box attack such as Square) before trusting its robust accuracy."
            )
        n_used = next(iter(self.sweeps.values())).get("n_examples", n)
        self.figures.append(
            Figure(
                "Robustness against the attack radius",
                file.name,
                f"Accuracy under PGD-{steps} (step eps/4, random start) on {n_used} test images as the "
                f"{_format_norm(self.norm)} radius grows from 0 (clean accuracy) to twice the training eps of "
                f"{_format_eps(self.eps)} (dotted vertical line), teacher in black: read off each model's accuracy "
                "at the dotted line; a good student stays close to the teacher at every radius, and every curve "
                "should fall toward chance (dashed) as eps grows, since one that stays flat suggests gradient "
                "masking. Shaded bands: ± 1 binomial standard error."
                + (
                    f" Note: {', '.join(masking)} ends above the teacher at 2 eps beyond the noise, a possible sign "
                    "of gradient masking (see the notes)."
                    if masking
                    else ""
                ),
            )
        )

    def _stronger_than_teacher(self) -> list[str]:
        """Runs whose sweep accuracy at the largest radius beats the teacher's by more than 1.96 standard errors."""
        if self.teacher is None or self.teacher.label not in self.sweeps:
            return []
        reference = self.sweeps[self.teacher.label]

        def last(record: dict[str, Any]) -> table.Cell:
            p, n = _as_float(record["accuracy"][-1]), int(record.get("n_examples") or 0)
            return table.Cell(p, math.sqrt(p * (1 - p) / n) if n else math.nan, n)

        teacher = last(reference)
        found = []
        for label, record in self.sweeps.items():
            if label == self.teacher.label or record.get("eps") != reference.get("eps"):
                continue
            cell = last(record)
            if cell.value - teacher.value > table.Z_95 * math.hypot(cell.error, teacher.error):
                found.append(label)
        return found

    def paths_profiles(self) -> None:
        for run in self.runs:
            has_keys = _has_paths_keys(run)
            if run.method in PATHS_METHODS and not has_keys:
                self.note(f"{run.label} uses method 'paths' but its metrics hold no paths/weight_* keys.")
            if not has_keys:
                continue
            file = plots.plot_paths_weights(
                run.metrics,
                self.figures_dir / f"paths_weights_{_file_name(run.label)}.png",
                title=f"PATHS adaptive weights along the adversarial paths ({run.label})",
            )
            self.figures.append(
                Figure(
                    f"PATHS weight profile: {run.label}",
                    file.name,
                    "Mean adaptive weight as a ratio to the uniform weight 1/k (left, axis from 0, so 1 is uniform) "
                    "and teacher-student KL (right, when logged; its axis fits the last epoch) at each step of the "
                    f"untargeted and targeted adversarial paths in the last epoch of {run.label}, earlier epochs "
                    "faint: steps above the dashed uniform line are the intermediate samples the method emphasises, "
                    "a flat profile near 1 means the weighting is close to uniform, and a profile with all weight on "
                    "the last step means it has reduced to plain final-point distillation.",
                )
            )

    def adversarial_examples(self, *, count: int, seed: int) -> None:
        best = _best_student(self.runs, self.sweeps, self.eps)
        if best is None:
            self.note("no run has a model: no adversarial examples.")
            return
        model, data = self.model_of(best), self.data_of(best)
        if model is None or data is None:
            return
        attack = PGD(
            model, eps=self.eps, step_size=self.eps / 4, steps=20, norm=self.norm, random_start=True, seed=seed
        )
        which = "best student" if best.role == "student" else best.role
        batch = plots.adversarial_batch(model, data, attack, count, seed=seed, device=self.device)
        file = plots.plot_adversarial_examples(
            model,
            data,
            attack,
            self.figures_dir / "adversarial_examples.png",
            n=count,
            seed=seed,
            device=self.device,
            title=f"{best.label}: clean (top) and PGD-20 adversarial (bottom) images, eps {_format_eps(self.eps)}",
            batch=batch,
        )
        flipped = (
            f" Here the attack also turned {batch.flipped_to_right} wrong clean prediction(s) right (a red top label "
            "above a green bottom one): PGD raises the loss of the true class, and a higher loss can still move "
            "the arg-max onto the label; it says nothing of robustness either way."
            if batch.flipped_to_right
            else ""
        )
        self.figures.append(
            Figure(
                f"Adversarial examples ({which}: {best.label})",
                file.name,
                f"{min(count, len(data))} class-balanced test images (top row) and their PGD-20 adversarial versions "
                f"at eps {_format_eps(self.eps)} (bottom row) for {best.label}, each column titled with the true "
                "label and each image labelled with the model's prediction, green when correct and red when "
                "wrong: a robust model keeps most bottom-row labels green under a perturbation that barely "
                "changes the image." + flipped,
            )
        )


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
    state = _Report(Path(run_dir), data_dir=data_dir, device=device, progress=progress)
    state.figures_dir.mkdir(parents=True, exist_ok=True)
    state.training_curves()
    if sweep_n > 0 and sweep_points > 0:
        state.eps_sweeps(n=sweep_n, points=sweep_points, steps=sweep_steps, seed=seed)
    state.paths_profiles()
    if examples > 0:
        state.adversarial_examples(count=examples, seed=seed)
    report = state.run_dir / "report.md"
    atomic_write_bytes(report, _markdown(state).encode())
    state.console.print(f"report: {report} ({len(state.figures)} figures in {state.figures_dir})")
    return report


# --------------------------------------------------------------------------- markdown


def _runs_table(runs: list[Run]) -> list[str]:
    lines = [
        "| run | role | method | model | data | training subset | eps | epochs | attack steps | seed | train time "
        "| teacher |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        epochs = plots.epoch_records(run.metrics)
        cfg = run.config
        teacher = Path(run.teacher_ref) if run.teacher_ref else None
        if teacher is not None and teacher.suffix == ".safetensors":
            teacher = teacher.parent
        lines.append(
            f"| {run.label} | {run.role} | {cfg.get('method', '-')} | {cfg.get('model', '-')} | "
            f"{cfg.get('data', '-')} | {cfg.get('subset') or 'all'} | {_eps_of(cfg):.4g} | "
            f"{epochs[-1]['epoch'] if epochs else '-'} | {cfg.get('steps', '-')} | {cfg.get('seed', '-')} | "
            f"{f'{_train_seconds(run):.0f} s' if epochs else '-'} | {teacher.name if teacher else '-'} |"
        )
    return lines


def _results_section(runs: list[Run]) -> list[str]:
    with_results = [r for r in runs if r.results]
    if not with_results:
        rows = [
            (r.label, r.role, {"accuracy": acc, "n_examples": r.config.get("eval_n"), "epoch": epoch})
            for r in runs
            for epoch, acc in [_last_eval(r)]
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
        {(_as_float(r.results.get("eps")), str(r.results.get("split") or "test")) for r in with_results}  # type: ignore[union-attr]
    )
    described = "; ".join(f"eps {_format_eps(e)} on the {s} split" for e, s in settings if not math.isnan(e))
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
        return _as_float(run.results["accuracy"]["clean"]), table.column_size(run.results, "clean")
    found = _last_eval(run)[1]
    return _as_float(found.get("clean")), run.config.get("eval_n")


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
    epochs = plots.epoch_records(run.metrics)
    if len(epochs) == 1:
        found.append(f"{run.label} was trained for a single epoch: its numbers are a smoke test, not a result.")
    if len(epochs) >= 2:
        loss = [_as_float(r.get("train_loss")) for r in epochs[-2:]]
        accuracy = [_as_float(r.get("eval_clean")) for r in epochs[-2:]]
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


def _train_seconds(run: Run) -> float:
    return sum(_as_float(r.get("seconds")) for r in plots.epoch_records(run.metrics) if r.get("seconds") is not None)


def _settings_block(state: _Report) -> list[str]:
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
    environments = [r.results["environment"] for r in evaluated if isinstance(r.results.get("environment"), dict)]  # type: ignore[union-attr]
    versions = _distinct([f"robustdistill {e.get('robustdistill')}, torch {e.get('torch')}" for e in environments])
    if not environments:
        versions = f"robustdistill {robustdistill.__version__}, torch {torch.__version__} (of this report)"
    seconds = {
        "training": sum(_train_seconds(r) for r in runs),
        "evaluation": sum(_as_float(v) for r in evaluated for v in (r.results.get("seconds") or {}).values()),  # type: ignore[union-attr]
        "eps sweep": sum(_as_float(record.get("seconds")) for record in state.sweeps.values()),
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
        + _distinct([len(plots.epoch_records(r.metrics)) or r.config.get("epochs") for r in runs])
        + f"; training attack: PGD with {_distinct([c.get('steps') for c in configs])} steps"
        + f"; batch size {_distinct([c.get('batch_size') for c in configs])}",
        f"- **Threat model:** {_format_norm(state.norm)}, eps = {_format_eps(state.eps)}",
        "- **Evaluation images per attack:** " + ("; ".join(per_attack) or in_training),
        f"- **Seeds:** {_distinct([c.get('seed') for c in configs])}",
        f"- **Versions:** {versions}",
        f"- **Runs:** {len(runs)}{teacher}; report generated on {generated}",
        "- **Wall time:** " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + " (a cached sweep counts "
        "the time of its first run)",
        "",
    ]


def _markdown(state: _Report) -> str:
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
            points = [_as_float(accuracy[0]), _sweep_score(record, state.eps), _as_float(accuracy[-1])]
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
