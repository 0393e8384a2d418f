"""The state of one report and its figure sections: runs, threat model, data, loaded models, sweeps, notes.

`write_report` (evaluate/report.py) builds a `ReportState`, runs its sections (training curves, eps
sweeps through the `sweep.json` cache, PATHS weight profiles, adversarial examples of the best student),
then writes the markdown from it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from robustdistill import data as data_lib
from robustdistill import models as model_lib
from robustdistill.attacks import PGD
from robustdistill.errors import RobustDistillError, one_line
from robustdistill.evaluate import examples, plots, sweep_cache, table
from robustdistill.evaluate import sweep as sweep_lib
from robustdistill.evaluate.discovery import Run, discover_runs, epoch_records, eps_of, is_method, last_eval
from robustdistill.evaluate.table import format_eps, format_norm, number
from robustdistill.utils import resolve_device

FIGURES = "figures"


class DataCache:
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
                self.loaded[key] = f"the test split of '{name}' could not be loaded ({one_line(error)})"
        return self.loaded[key]


def robust_score(accuracy: dict[str, Any]) -> float:
    """Worst-case accuracy, else the lowest accuracy under attack, else clean accuracy."""
    if "worst_case" in accuracy and not math.isnan(number(accuracy["worst_case"])):
        return number(accuracy["worst_case"])
    attacked = [number(v) for k, v in accuracy.items() if k != "clean" and not math.isnan(number(v))]
    return min(attacked) if attacked else number(accuracy.get("clean"))


def sweep_score(record: dict[str, Any] | None, eps: float) -> float:
    """Sweep accuracy at `eps`: exact on the grid (odd `points`), linearly interpolated between points."""
    if not record or not record.get("eps"):
        return math.nan
    return float(np.interp(eps, [float(e) for e in record["eps"]], [number(a) for a in record["accuracy"]]))


def best_student(runs: list[Run], sweeps: dict[str, dict[str, Any]], eps: float) -> Run | None:
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
        lambda r: robust_score(r.results["accuracy"]) if r.results else math.nan,
        lambda r: sweep_score(sweeps.get(r.label), eps),
        lambda r: robust_score(last_eval(r)[1]) if last_eval(r)[1] else math.nan,
    )
    by_source = [[source(run) for source in sources] for run in pool]
    common = next((i for i in range(len(sources)) if all(not math.isnan(row[i]) for row in by_source)), None)

    def score(index: int) -> float:
        row = by_source[index]
        if common is not None:
            return row[common]
        return next((value for value in row if not math.isnan(value)), -1.0)

    return pool[max(range(len(pool)), key=score)]  # max keeps the first of equal scores


def _file_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def _has_paths_keys(run: Run) -> bool:
    return any(plots.paths_profile(r) for r in epoch_records(run.metrics))


@dataclass
class Figure:
    """One figure of the report: its heading, its PNG's name in `figures/` and its caption."""

    heading: str
    file: str
    caption: str


class ReportState:
    """State shared by the sections of one report: runs, threat model, data, loaded models, notes."""

    def __init__(self, run_dir: Path, *, data_dir: str | Path | None, device: str | None, progress: bool) -> None:
        from rich.console import Console

        self.run_dir = run_dir
        self.runs, self.teacher, _ = discover_runs(run_dir)
        self.figures_dir = run_dir / FIGURES
        self.device = resolve_device(device)
        self.progress = progress
        self.console = Console(stderr=True, quiet=not progress)
        self.notes: list[str] = [note for run in self.runs for note in run.notes]
        self.figures: list[Figure] = []
        self.sweeps: dict[str, dict[str, Any]] = {}
        primary = self.teacher or self.runs[0]
        self.primary = primary
        self.eps = eps_of(primary.config)
        self.norm = str(primary.config.get("norm") or "linf")
        self.dataset_name = str(primary.config.get("data") or "unknown")
        self._data = DataCache(data_dir)
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
                    self.note(f"the model of {run.label} could not be loaded ({one_line(error)})")
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
        curves = {run.label: run.metrics for run in self.runs if epoch_records(run.metrics)}
        if not curves:
            self.note("no run has epoch records in metrics.jsonl: no training curves.")
            return
        file = plots.plot_training_curves(
            curves,
            self.figures_dir / "training_curves.png",
            teacher=self.teacher.label if self.teacher else None,
            title=f"Training curves ({self.dataset_name}, eps {format_eps(self.eps)})",
        )
        attacked = sorted(
            {
                key[len("eval_") :]
                for run in self.runs
                for record in epoch_records(run.metrics)
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
        cache_path = self.run_dir / sweep_cache.SWEEP_CACHE
        cache = sweep_cache.read_cache(cache_path)
        new_cache: dict[str, Any] = {}
        for run in self.runs:
            if run.weights is None:
                self.note(f"{run.label} has no model.safetensors: left out of the eps sweep.")
                continue
            data = self.data_of(run)
            if data is None:
                continue
            key = sweep_cache.sweep_key(run, {**settings, "data": data.name, "split": data.split})
            record = sweep_cache.cached_sweep(cache.get(run.label), key, run.weights)
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
                digest = sweep_cache.weights_digest(run.weights)
            new_cache[run.label] = {"key": {**key, "digest": digest}, "record": record}
            self.sweeps[run.label] = record
        if new_cache != cache:
            sweep_cache.write_cache(cache_path, new_cache)
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
                f"{format_norm(self.norm)} radius grows from 0 (clean accuracy) to twice the training eps of "
                f"{format_eps(self.eps)} (dotted vertical line), teacher in black: read off each model's accuracy "
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
            p, n = number(record["accuracy"][-1]), int(record.get("n_examples") or 0)
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
            if is_method(run.method, "paths") and not has_keys:
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
        best = best_student(self.runs, self.sweeps, self.eps)
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
        batch = examples.adversarial_batch(model, data, attack, count, seed=seed, device=self.device)
        file = examples.plot_adversarial_examples(
            model,
            data,
            attack,
            self.figures_dir / "adversarial_examples.png",
            n=count,
            seed=seed,
            device=self.device,
            title=f"{best.label}: clean (top) and PGD-20 adversarial (bottom) images, eps {format_eps(self.eps)}",
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
                f"at eps {format_eps(self.eps)} (bottom row) for {best.label}, each column titled with the true "
                "label and each image labelled with the model's prediction, green when correct and red when "
                "wrong: a robust model keeps most bottom-row labels green under a perturbation that barely "
                "changes the image." + flipped,
            )
        )
