"""benchmarks/frontier.py: its pass counter, its table and its figure, on tiny fake records."""

from __future__ import annotations

import argparse
import json
import math
import statistics

import pytest
import torch
from torch import nn

import robustdistill.train
from robustdistill import data, methods
from robustdistill.config import RunConfig
from tests import benchmark_script
from tests.conftest import tiny_cnn

frontier = benchmark_script.load("frontier")

T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom


def _record(label: str, seed: int, autoattack: float, seconds: float, passes: int, complete: bool = True) -> dict:
    method = label.split("-")[0]
    return {
        "label": label,
        "seed": seed,
        "method": method,
        "method_opts": {"sample_steps": 1} if label == "paths-sample1" else {},
        "model_opts": {},
        "accuracy": {"clean": autoattack + 0.2, "autoattack": autoattack},
        "attacks": {"autoattack": {"n_examples": 100}},
        "train_seconds": seconds,
        "passes": {
            "student_forward": passes,
            "student_backward": passes // 2,
            "teacher_forward": passes // 4,
            "teacher_backward": 0,
            "passes_complete": complete,
        },
    }


@pytest.fixture
def records() -> list[dict]:
    return [
        *(_record("ard", s, a, t, 1_000_000) for s, a, t in ((0, 0.30, 100.0), (1, 0.32, 110.0), (2, 0.31, 90.0))),
        *(_record("paths", s, a, 500.0, 5_000_000) for s, a in ((0, 0.34), (1, 0.35), (2, 0.345))),
        *(_record("paths-sample1", s, a, 190.0, 2_000_000, s != 1) for s, a in ((0, 0.34), (1, 0.35), (2, 0.33))),
        _record("pgd-at", 0, 0.20, 80.0, 900_000),
    ]


def test_summary_by_hand(records):
    rows = frontier.summarise(records)
    paths = [34.0, 35.0, 34.5]
    half = T_975_2 * statistics.stdev(paths) / math.sqrt(3)
    assert rows["paths"]["autoattack"] == pytest.approx(statistics.fmean(paths))
    assert rows["paths"]["autoattack_ci95"] == pytest.approx(half)
    assert rows["ard"]["seconds"] == pytest.approx(100.0)
    assert rows["paths-sample1"]["seconds_over_baseline"] == pytest.approx(1.9)
    assert rows["paths"]["seconds_over_baseline"] == pytest.approx(5.0)
    assert rows["paths-sample1"]["passes"] == pytest.approx(2_000_000 + 1_000_000 + 500_000)
    assert rows["paths-sample1"]["student_passes"] == pytest.approx(3_000_000)
    assert rows["paths-sample1"]["passes_complete"] is False and rows["ard"]["passes_complete"] is True
    # full paths' interval is 34.5 ± 1.24: sample1's 34.0 lies in it, ard's 31.0 does not
    assert rows["paths-sample1"]["within_reference_ci"] is True
    assert rows["ard"]["within_reference_ci"] is False
    assert math.isnan(rows["pgd-at"]["autoattack_ci95"])  # one seed: no interval
    assert rows["pgd-at"]["seeds"] == [0] and rows["ard"]["seeds"] == [0, 1, 2]


def test_table_is_sorted_by_cost_and_marks_partial_counts(records):
    text = frontier.markdown(frontier.summarise(records), ["# title", ""])
    body = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| configuration")]
    assert [line.split(" | ")[0][2:] for line in body] == ["pgd-at", "ard", "paths-sample1", "paths"]
    sample = next(line for line in body if line.startswith("| paths-sample1"))
    assert "`sample_steps=1`" in sample and "34.0 ± " in sample and "(partial)" in sample and "| yes |" in sample
    assert "| 1.90 |" in sample
    assert "| 20.0 |" in next(line for line in body if line.startswith("| pgd-at"))  # one seed: no ±


def test_report_writes_the_table_json_and_a_figure(tmp_path, records):
    args = argparse.Namespace(
        out=str(tmp_path), data="fashion-mnist", eps=0.1, student="smallcnn", teacher="t", epochs=1, subset=None,
        batch_size=128, lr=0.01, steps=10, note="a note",
    )  # fmt: skip
    table, figure = frontier.write_report(records, args, "python benchmarks/frontier.py --table-only")
    assert "a note" in table.read_text() and "AutoAttack within the 95 % CI of paths" in table.read_text()
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    saved = json.loads((tmp_path / "frontier.json").read_text())
    assert set(saved) == {"ard", "paths", "paths-sample1", "pgd-at"}


def test_pass_counter_counts_forward_and_backward_samples():
    counter = frontier.PassCounter()
    model = nn.Linear(3, 2)
    handle = counter.attach(model, "student")
    with torch.no_grad():
        model(torch.rand(5, 3))
    u = torch.rand(4, 3, requires_grad=True)
    torch.autograd.grad(model(u).sum(), u)  # an attack step: forward and input backward
    model(torch.rand(6, 3)).sum().backward()  # a training step
    handle.remove()
    model(torch.rand(7, 3))
    assert counter.as_dict() == {
        "student_forward": 15,
        "student_backward": 10,
        "teacher_forward": 0,
        "teacher_backward": 0,
    }


def test_counting_passes_wraps_fit_and_counts_a_pgd_at_run(tmp_path, digits_train):
    train = data.subset(digits_train, 64, seed=0)
    counter = frontier.PassCounter()
    cfg = RunConfig(epochs=1, batch_size=32, eps=0.1, steps=2, eval_every=0, data="digits", seed=0)
    with frontier.counting_passes(counter):
        robustdistill.train.fit(
            tiny_cnn(seed=1), methods.create("pgd-at", eps=0.1, steps=2), train, config=cfg, run_dir=tmp_path,
            progress=False,
        )  # fmt: skip
    # 2 batches of 32: 2 attack steps (forward + input backward) and one training step each
    assert counter.as_dict() == {
        "student_forward": 2 * (2 * 32 + 32),
        "student_backward": 2 * (2 * 32 + 32),
        "teacher_forward": 0,
        "teacher_backward": 0,
    }
    assert robustdistill.train.fit.__name__ == "fit"  # restored


def test_entries_cover_the_issue_and_build(records):
    table = frontier.entries(10)
    for label in ("pgd-at", "ard", "rslad", "adaad", "paths", "paths-sample1", "ard-reuse", "fgsm-rs"):
        assert label in table
    assert table["ard-reuse"][1] == {"reuse_steps": 2} and frontier.entries(5)["ard-reuse"][1] == {"reuse_steps": 1}
    assert table["paths-final"][1] == {"aligned_steps": "10"}
    teacher = tiny_cnn(seed=2)
    run_attack = {"eps": 0.1, "step_size": None, "steps": 10, "norm": "linf"}  # what the run fills in
    for method, options, needs_teacher, _ in table.values():
        resolved = methods.resolve_run_options(method, options, run_attack)
        extra = {"teacher": teacher} if needs_teacher else {}
        built = methods.spec(method).build(resolved, **extra, facts=methods.RunFacts(num_samples=100))
        assert all(built.options.to_dict()[k] == v for k, v in options.items() if k != "aligned_steps")
