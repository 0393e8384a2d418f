"""Run discovery: a run directory (or a collection of runs such as `runs/demo/`) read as the report sees it.

A *run* is a directory with `metrics.jsonl` or `model.safetensors` (plus `config.yaml`, optional
`results.json`). A *collection* is a directory whose sub-directories are runs; its teacher is the
sub-run named `teacher`, else the one the students' `teacher` setting points at, else one trained
without a teacher by a teacher objective (the registry's role "objective").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from robustdistill import methods
from robustdistill.config import default_eps
from robustdistill.errors import ConfigError, RobustDistillError, one_line
from robustdistill.evaluate.table import number
from robustdistill.run_dir import has_results
from robustdistill.runtime.metrics import read_metrics


def _registered(method: str | None) -> methods.MethodSpec | None:
    try:
        return methods.spec(method or "")
    except RobustDistillError:
        return None


def is_objective(method: str | None) -> bool:
    """Whether `method` is a registered teacher objective (the registry's role "objective")."""
    spec = _registered(method)
    return spec is not None and spec.role == "objective"


def is_method(method: str | None, name: str) -> bool:
    """Whether `method` (a name or an alias) is the registered method `name`."""
    spec = _registered(method)
    return spec is not None and spec.name == name


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


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def read_json(path: Path) -> dict[str, Any] | None:
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
        results=read_json(path / "results.json"),
    )
    try:
        run.metrics = read_metrics(path)
    except (OSError, json.JSONDecodeError) as error:
        run.notes.append(f"metrics.jsonl of {label} could not be read ({one_line(error)}); no training curves for it.")
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
        teacher = next((r for r in runs if not r.teacher_ref and is_objective(r.method)), None)
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
    if has_results(run_dir):
        run = _load_run(run_dir, run_dir.resolve().name)
        run.role = "student" if run.teacher_ref else "run"
        return [run], None, False
    children = sorted(p for p in run_dir.iterdir() if has_results(p))
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


def eps_of(config: Mapping[str, Any]) -> float:
    """The run's eps: its `eps` setting, else the default eps of its dataset."""
    eps = config.get("eps")
    if isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0:
        return float(eps)
    return default_eps(str(config.get("data", "")))


def epoch_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The per-epoch records of a metrics log, in epoch order (the last one wins for a repeated epoch)."""
    by_epoch: dict[int, Mapping[str, Any]] = {}
    for record in records:
        if record.get("kind", "epoch") == "epoch" and "epoch" in record:
            by_epoch[int(record["epoch"])] = record
    return [by_epoch[e] for e in sorted(by_epoch)]


def last_eval(run: Run) -> tuple[int | None, dict[str, float]]:
    """`(epoch, {attack: accuracy})` of the last epoch record with in-training evaluation keys."""
    for record in reversed(epoch_records(run.metrics)):
        found = {k[len("eval_") :]: number(v) for k, v in record.items() if k.startswith("eval_")}
        if found:
            return int(record["epoch"]), found
    return None, {}


def train_seconds(run: Run) -> float:
    """Seconds the run spent in its epochs (the sum of their `seconds`)."""
    return sum(number(r.get("seconds")) for r in epoch_records(run.metrics) if r.get("seconds") is not None)
