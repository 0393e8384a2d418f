"""Tests of robustdistill.evaluate.sweep / plots / report on hand-built run directories (digits 8x8)."""

from __future__ import annotations

import json
import os

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdistill import data, evaluate, models
from robustdistill.config import RunConfig
from robustdistill.errors import ConfigError
from robustdistill.evaluate import discovery, examples, plots, report, sections, sweep_cache
from robustdistill.evaluate import sweep as sweep_lib

EPS = 0.1
STEPS = 5  # PATHS steps in the handwritten diagnostics
REPORT_OPTIONS = {"sweep_n": 40, "sweep_points": 4, "sweep_steps": 3, "examples": 6, "device": "cpu", "progress": False}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and they thrash on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits() -> tuple[data.ArrayDataset, data.ArrayDataset]:
    return data.load("digits", "train"), data.load("digits", "test")


def _train(model: nn.Module, train: data.ArrayDataset, steps: int, *, batch: int = 128, lr: float = 3e-3) -> None:
    """A few Adam steps of plain cross-entropy (enough to get well above chance on digits)."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        index = torch.randint(len(train), (batch,), generator=generator)
        x, y = train.images[index].float() / 255, train.labels[index]
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def snapshots(digits) -> dict[str, models.Classifier]:
    """A tiny SmallCNN (zero-padded to 16x16 for 8x8 digits) saved at three stages of training."""
    train, _ = digits
    options = {"num_classes": 10, "in_channels": 1, "width": 0.25, "hidden": 32, "dropout": 0.0}
    torch.manual_seed(0)
    model = models.create("smallcnn", **options, mean=train.mean, std=train.std)
    out = {}
    for name, steps in (("weak", 15), ("medium", 25), ("strong", 40)):
        _train(model, train, steps)
        copy = models.create("smallcnn", **options, mean=train.mean, std=train.std)
        copy.load_state_dict(model.state_dict())
        out[name] = copy.eval()
    return out


def _epoch(epoch: int, *, loss: float, clean: float, robust: float, **extra: float) -> dict:
    return {
        "kind": "epoch",
        "epoch": epoch,
        "step": 10 * epoch,
        "lr": 0.1,
        "seconds": 1.0,
        "images_per_s": 1000.0,
        "train_loss": loss,
        "train_acc_adv": robust,
        "eval_clean": clean,
        "eval_pgd-10": robust,
        "eval_worst_case": robust,
        **extra,
    }


def _paths_diagnostics(epoch: int) -> dict[str, float]:
    """PATHS keys as methods/paths.py logs them: 1-based steps, weights summing to 1 per branch."""
    out: dict[str, float] = {}
    for branch, tilt in (("u", 1.0 + epoch), ("t", 0.5)):
        raw = np.exp(tilt * np.linspace(0, 1, STEPS))
        weights = raw / raw.sum()
        for k in range(1, STEPS + 1):
            out[f"paths/weight_{branch}/step_{k:02d}"] = float(weights[k - 1])
            out[f"paths/kl_{branch}/step_{k:02d}"] = 0.05 * k * (1.5 if branch == "t" else 1.0) / epoch
        out[f"paths/teacher_error_{branch}"] = 0.1 if branch == "u" else 0.3
    out["paths/target_success"] = 0.4
    return out


def _make_run(
    run_dir, model: models.Classifier, *, method: str, teacher=None, epochs: list[dict], results: dict | None = None
):
    run_dir.mkdir(parents=True)
    config = RunConfig(
        data="digits", model="smallcnn", method=method, eps=EPS, teacher=None if teacher is None else str(teacher)
    )
    (run_dir / "config.yaml").write_text(config.to_yaml())
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs))
    models.save(model, run_dir / "model.safetensors")
    if results is not None:
        evaluate.write_record(results, run_dir / "results.json")
    return run_dir


def _results(clean: float, fgsm: float, pgd: float) -> dict:
    accuracy = {"clean": clean, "fgsm": fgsm, "pgd-20": pgd, "worst_case": min(fgsm, pgd)}
    return {"accuracy": accuracy, "n_examples": 359, "eps": EPS, "dataset": "digits", "split": "test"}


@pytest.fixture
def demo(tmp_path, snapshots):
    """A collection like runs/demo: a teacher and two students, one of them trained with `paths`."""
    root = tmp_path / "demo"
    teacher = _make_run(
        root / "teacher",
        snapshots["strong"],
        method="pgd-at",
        epochs=[_epoch(1, loss=1.8, clean=0.6, robust=0.3), _epoch(2, loss=1.2, clean=0.8, robust=0.45)],
        results=_results(0.82, 0.5, 0.45),
    )
    _make_run(
        root / "rslad",
        snapshots["weak"],
        method="rslad",
        teacher=teacher,
        epochs=[_epoch(1, loss=0.9, clean=0.5, robust=0.2), _epoch(2, loss=0.7, clean=0.7, robust=0.35)],
        results=_results(0.7, 0.4, 0.35),
    )
    _make_run(
        root / "paths",
        snapshots["medium"],
        method="paths",
        teacher=teacher / "model.safetensors",
        epochs=[
            _epoch(1, loss=0.8, clean=0.55, robust=0.25, **_paths_diagnostics(1)),
            _epoch(2, loss=0.6, clean=0.75, robust=0.4, **_paths_diagnostics(2)),
        ],
    )
    return root


def _assert_png_drawn(path) -> None:
    assert path.is_file() and path.stat().st_size > 0, path
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, (path, image.shape)
    assert float(image[..., :3].std()) > 0.01, f"{path} looks blank"


FIGURES = ("training_curves.png", "eps_sweep.png", "paths_weights_paths.png", "adversarial_examples.png")


def test_collection_report_writes_every_figure_and_table(demo, monkeypatch):
    path = report.write_report(demo, **REPORT_OPTIONS)
    assert path == demo / "report.md"
    text = path.read_text()
    for name in FIGURES:
        _assert_png_drawn(demo / "figures" / name)
        assert f"](figures/{name})" in text, name
    assert text.count("*Figure ") == len(FIGURES)
    assert "digits" in text.split("## Runs")[0] and "eps = 0.1" in text
    # results table: attacks as columns with their image counts, runs as rows, accuracy % ± binomial
    # standard error sqrt(p (1 - p) / n), worst case last
    assert "| run | role | clean, n=359 | fgsm, n=359 | pgd-20, n=359 | worst case (all attacks), n=359 |" in text
    assert "| teacher | teacher | 82.0 ± 2.0 | 50.0 ± 2.6 | 45.0 ± 2.6 | 45.0 ± 2.6 |" in text
    assert "| rslad | student | 70.0 ± 2.4 | 40.0 ± 2.6 | 35.0 ± 2.5 | 35.0 ± 2.5 |" in text  # one student: no bold
    settings = text.split("## Runs")[0]
    for item in ("## Settings", "**Data:** digits", "**Seeds:** 0", "**Wall time:** training 6 s", "torch"):
        assert item in settings, item
    assert "No `results.json` for: paths" in text
    # the best student by robust accuracy (only `paths` has no results.json: ranked by its sweep)
    assert "Adversarial examples (best student:" in text
    cache = json.loads((demo / sweep_cache.SWEEP_CACHE).read_text())
    assert set(cache["runs"]) == {"teacher", "rslad", "paths"}
    for entry in cache["runs"].values():
        record = entry["record"]
        assert len(record["eps"]) == len(record["accuracy"]) == 4
        assert record["eps"][0] == 0.0 and record["eps"][-1] == pytest.approx(2 * EPS)

    # a second report reuses the cached sweeps: the sweep function must not be called
    def no_sweep(*args, **kwargs):
        raise AssertionError("eps_sweep was called although every sweep is cached")

    monkeypatch.setattr(sweep_lib, "eps_sweep", no_sweep)
    before = {name: (demo / "figures" / name).stat().st_mtime_ns for name in FIGURES}
    report.write_report(demo, **REPORT_OPTIONS)
    _assert_png_drawn(demo / "figures" / "eps_sweep.png")
    assert (demo / "figures" / "eps_sweep.png").stat().st_mtime_ns >= before["eps_sweep.png"]

    # re-saving one model invalidates only its own entry
    calls = []

    def counting_sweep(model, dataset, **kwargs):
        calls.append(model)
        return json.loads(json.dumps(cache["runs"]["rslad"]["record"]))

    monkeypatch.setattr(sweep_lib, "eps_sweep", counting_sweep)
    weights = demo / "rslad" / "model.safetensors"
    models.save(models.load(weights), weights)
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    report.write_report(demo, **REPORT_OPTIONS)
    assert len(calls) == 0, "same tensors after a re-save (new mtime): the cache still holds"
    changed = models.load(weights)
    with torch.no_grad():
        changed.fc.bias.add_(1.0)
    models.save(changed, weights)
    report.write_report(demo, **REPORT_OPTIONS)
    assert len(calls) == 1


def test_single_run_report_falls_back_to_training_metrics(tmp_path, snapshots):
    run = _make_run(
        tmp_path / "paths-run",
        snapshots["medium"],
        method="paths",
        teacher=tmp_path / "elsewhere" / "teacher",
        epochs=[_epoch(1, loss=0.8, clean=0.55, robust=0.25, **_paths_diagnostics(1))],
    )
    text = report.write_report(run, **{**REPORT_OPTIONS, "sweep_points": 0}).read_text()
    for name in ("training_curves.png", "paths_weights_paths-run.png", "adversarial_examples.png"):
        _assert_png_drawn(run / "figures" / name)
        assert f"](figures/{name})" in text
    assert not (run / "figures" / "eps_sweep.png").exists() and not (run / sweep_cache.SWEEP_CACHE).exists()
    assert "last in-training evaluation" in text
    # clean, pgd-10, worst case on the in-training subset (eval_n = 500), then the epoch
    assert "| paths-run | student | 55.0 ± 2.2 | 25.0 ± 1.9 | 25.0 ± 1.9 | 1 |" in text


def test_teacher_found_from_students_config(tmp_path):
    for name, config in (
        ("robust-t", RunConfig(data="digits", method="trades")),
        ("plain-at", RunConfig(data="digits", method="pgd-at")),
        ("kd", RunConfig(data="digits", method="ard", teacher=str(tmp_path / "robust-t" / "model.safetensors"))),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(config.to_yaml())
        (tmp_path / name / "metrics.jsonl").write_text(json.dumps(_epoch(1, loss=1.0, clean=0.5, robust=0.2)) + "\n")
    (tmp_path / "notes").mkdir()  # not a run
    runs, teacher, collection = discovery.discover_runs(tmp_path)
    assert collection and teacher is not None and teacher.label == "robust-t"
    assert [(r.label, r.role) for r in runs] == [("robust-t", "teacher"), ("kd", "student"), ("plain-at", "baseline")]
    with pytest.raises(ConfigError):
        discovery.discover_runs(tmp_path / "notes")


# --------------------------------------------------------------------------- eps sweep


@pytest.fixture(scope="module")
def mlp(digits) -> nn.Module:
    """An undefended MLP on digits: accurate, and easy to attack at eps 0.1-0.2."""
    train, _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    _train(model, train, 300, batch=256, lr=1e-2)
    return model


def test_eps_sweep_starts_at_clean_accuracy_and_falls(mlp, digits):
    _, test = digits
    record = sweep_lib.eps_sweep(mlp, test, eps=EPS, points=5, n=200, steps=10, seed=0)
    assert record["eps"] == pytest.approx(np.linspace(0, 2 * EPS, 5).tolist())
    assert record["n_examples"] == 200 and record["reference_eps"] == EPS
    clean = evaluate.attack_suite(mlp, test, attacks=["clean"], eps=EPS, n=200, seed=0, progress=False)
    assert record["accuracy"][0] == pytest.approx(clean["accuracy"]["clean"], abs=1e-6)
    assert record["accuracy"][0] > 0.8
    accuracy = np.array(record["accuracy"])
    assert np.all(np.diff(accuracy) <= 0.02), accuracy  # non-increasing up to sampling noise
    assert accuracy[-1] < accuracy[0] - 0.3, accuracy  # the attack bites
    assert sweep_lib.eps_sweep(mlp, test, eps=EPS, points=5, n=200, steps=10, seed=0)["accuracy"] == record["accuracy"]


def test_eps_sweep_restores_mode_and_rejects_bad_settings(mlp, digits):
    _, test = digits
    mlp.train()
    sweep_lib.eps_sweep(mlp, test, eps=EPS, points=2, n=20, steps=1)
    assert mlp.training
    mlp.eval()
    for bad in ({"eps": 0.0}, {"eps": -1.0}, {"points": 1}, {"n": 0}, {"steps": 0}):
        with pytest.raises(ConfigError):
            sweep_lib.eps_sweep(mlp, test, **{"eps": EPS, **bad})


# --------------------------------------------------------------------------- plots on their own


def test_plots_handle_nan_strings_and_refuse_missing_paths_keys(tmp_path):
    second = {**_epoch(2, loss=0.5, clean=0.6, robust=0.3), "eval_clean": "nan"}  # MetricsLog writes NaN as "nan"
    records = [_epoch(1, loss=1.0, clean=0.5, robust=0.2), second]
    _assert_png_drawn(plots.plot_training_curves({"a": records, "b": records[:1]}, tmp_path / "c.png"))
    with pytest.raises(ValueError, match="paths"):
        plots.plot_paths_weights(records, tmp_path / "p.png")
    sweeps = {"teacher": {"eps": [0.0, 8 / 255, 16 / 255], "accuracy": [0.9, 0.5, 0.2]}}
    _assert_png_drawn(plots.plot_eps_sweep(sweeps, tmp_path / "s.png", reference_eps=8 / 255, chance=10))


def test_a_student_above_its_teacher_at_large_eps_gets_a_gradient_masking_note(demo, monkeypatch):
    def canned(model, dataset, *, eps, points, n, **kwargs):
        # the teacher is the strong snapshot; give the other two a flat curve far above it at 2 eps
        last = 0.05 if model is canned.teacher else 0.5
        grid = sweep_lib.eps_grid(eps, points)
        return {"eps": grid, "accuracy": [0.8] * (len(grid) - 1) + [last], "n_examples": 500, "seconds": 0.0}

    original = sections.ReportState.model_of

    def model_of(self, run):
        model = original(self, run)
        if run.label == "teacher":
            canned.teacher = model
        return model

    canned.teacher = None
    monkeypatch.setattr(sections.ReportState, "model_of", model_of)
    monkeypatch.setattr(sweep_lib, "eps_sweep", canned)
    text = report.write_report(demo, **{**REPORT_OPTIONS, "examples": 0}).read_text()
    notes = text.split("## Notes")[1]
    assert "rslad is more robust than its teacher at 2 eps" in notes and "gradient masking" in notes
    assert "paths is more robust than its teacher" in notes
    assert "teacher is more robust" not in notes
    assert "± 1 binomial standard error" in text  # the sweep figure's error bands are named


def test_adversarial_batch_counts_flips_both_ways():
    y = torch.tensor([0, 1, 2, 3])
    batch = examples.AdversarialBatch(
        x=torch.zeros(4, 1, 2, 2),
        x_adv=torch.zeros(4, 1, 2, 2),
        y=y,
        pred_clean=torch.tensor([0, 1, 0, 0]),  # right, right, wrong, wrong
        pred_adv=torch.tensor([1, 1, 2, 0]),  # wrong, right, right, wrong
    )
    assert (batch.flipped_to_wrong, batch.flipped_to_right) == (1, 1)


def test_warnings_for_a_model_near_chance_or_undertrained(tmp_path, snapshots):
    run_dir = _make_run(
        tmp_path / "weak",
        snapshots["weak"],
        method="pgd-at",
        epochs=[_epoch(1, loss=2.0, clean=0.11, robust=0.1), _epoch(2, loss=1.5, clean=0.12, robust=0.1)],
    )
    run = discovery.discover_runs(run_dir)[0][0]
    found = report.training_warnings(run, 10)
    assert any("near chance: clean accuracy 12.0%" in w for w in found)
    assert any("undertrained: its training loss still fell 25%" in w for w in found)
    text = report.write_report(run_dir, **{**REPORT_OPTIONS, "sweep_points": 0, "examples": 0}).read_text()
    assert text.index("## Warnings") < text.index("## Runs")
