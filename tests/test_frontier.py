"""benchmarks/frontier.py: its pass counter, its table and its figure, on tiny fake records."""

from __future__ import annotations

import argparse
import json
import math
import statistics

import numpy as np
import pytest
import torch
from torch import nn

import robustdistill.train
from robustdistill import data, methods
from robustdistill.config import RunConfig, load_config
from robustdistill.evaluate.compare import encode_correct
from robustdistill.runs import train_from_config
from tests import benchmark_script
from tests.conftest import tiny_cnn

frontier = benchmark_script.load("frontier")

T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom


def _record(label: str, seed: int, correct: str, seconds: float, layout: str = "on") -> dict:
    """A method-table record: AutoAttack correctness per test image (a 0/1 string), seconds, layout."""
    method, options, group = frontier.ENTRIES[label]
    accuracy = correct.count("1") / len(correct)
    return {
        "label": label,
        "seed": seed,
        "method": method,
        "method_opts": options,
        "group": group,
        "accuracy": {"clean": accuracy + 0.1, "autoattack": accuracy},
        "n_examples": {"autoattack": len(correct)},
        "per_sample": {"autoattack": encode_correct(np.array([c == "1" for c in correct]))},
        "train_seconds": seconds,
        "channels_last": layout,
    }


def _passes(student: int, teacher: int) -> dict:
    passes = {
        "student_forward": student,
        "student_backward": student,
        "teacher_forward": teacher,
        "teacher_backward": 0,
    }
    return {"passes": passes, "forward_macs": {"student": 1_000, "teacher": 10_000}}


@pytest.fixture
def groups() -> dict[str, list[dict]]:
    # 20 test images; paths right on 10 of them in every seed
    paths = "1111111111" + "0000000000"
    return {
        "ard": [_record("ard", s, "1111000000" + "0000000000", t) for s, t in ((0, 100.0), (1, 110.0), (2, 90.0))],
        "paths": [_record("paths", s, paths, 500.0) for s in range(3)],
        "paths-u-sample1": [
            _record("paths-u-sample1", s, c, 190.0)
            for s, c in ((0, paths), (1, "1111111110" + "0000000000"), (2, "1111111111" + "1000000000"))
        ],
        "pgd-at": [_record("pgd-at", 0, "1111100000" + "0000000000", 80.0, layout="auto")],
    }


@pytest.fixture
def passes() -> dict[str, dict]:
    return {"ard": _passes(1_000_000, 500_000), "paths": _passes(4_000_000, 2_000_000),
            "paths-u-sample1": _passes(1_500_000, 400_000)}  # fmt: skip


def test_summary_by_hand(groups, passes):
    rows = frontier.summarise(groups, passes)
    sample = [50.0, 45.0, 55.0]
    half = T_975_2 * statistics.stdev(sample) / math.sqrt(3)
    assert rows["paths-u-sample1"]["autoattack"] == pytest.approx(50.0)
    assert rows["paths-u-sample1"]["autoattack_ci95"] == pytest.approx(half)
    assert rows["ard"]["seconds"] == pytest.approx(100.0)
    assert rows["paths-u-sample1"]["seconds_over_baseline"] == pytest.approx(1.9)
    assert rows["paths"]["seconds_over_baseline"] == pytest.approx(5.0)
    assert rows["paths-u-sample1"]["passes"] == 3_400_000
    assert rows["paths-u-sample1"]["passes_over_baseline"] == pytest.approx(3_400_000 / 2_500_000)
    assert rows["paths-u-sample1"]["student_passes"] == 3_000_000
    # compute: 3.0 M student passes of 1 000 multiply-adds and 0.4 M teacher passes of 10 000
    assert rows["paths-u-sample1"]["compute"] == pytest.approx(3.0e9 + 4.0e9)
    assert rows["paths-u-sample1"]["compute_over_baseline"] == pytest.approx(7.0e9 / (2.0e9 + 5.0e9))
    assert math.isnan(rows["pgd-at"]["passes"])  # no pass record: no pass columns
    # paired over the 20 images: sample1 equals paths on average (diff 0), ard is 30 points below: wrong on 6
    # of the images where paths is right, so its interval stays below 0
    diff, low, high = rows["paths-u-sample1"]["vs_reference"]
    assert diff == pytest.approx(0.0) and low < 0 < high
    assert rows["paths-u-sample1"]["within_reference_ci"] is True
    assert rows["ard"]["vs_reference"][0] == pytest.approx(-30.0) and rows["ard"]["vs_reference"][2] < 0
    assert rows["ard"]["within_reference_ci"] is False
    assert rows["paths"]["vs_reference"] is None and rows["paths"]["within_reference_ci"] is None
    assert math.isnan(rows["pgd-at"]["autoattack_ci95"])  # one seed: no interval
    assert rows["pgd-at"]["channels_last"] == "auto" and rows["ard"]["channels_last"] == "on"
    assert rows["pgd-at"]["seeds"] == [0] and rows["ard"]["seeds"] == [0, 1, 2]


def test_table_is_sorted_by_compute_then_seconds(groups, passes):
    text = frontier.markdown(frontier.summarise(groups, passes), ["# title", ""])
    body = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| configuration")]
    assert [line.split(" | ")[0][2:] for line in body] == ["ard", "paths-u-sample1", "paths", "pgd-at"]  # by compute
    sample = next(line for line in body if line.startswith("| paths-u-sample1"))
    assert "`branches=untargeted; sample_steps=1`" in sample and "50.0 ± " in sample and "| yes |" in sample
    assert "| 1.90 |" in sample and "| 3.4 |" in sample and "| 1.36 |" in sample
    assert "| 25.0 |" in next(line for line in body if line.startswith("| pgd-at"))  # one seed: no ±


def test_report_writes_the_table_json_and_a_figure_and_names_what_is_missing(tmp_path, groups, passes):
    args = frontier.parse_args(["--out", str(tmp_path), "--only", "pgd-at,ard,paths,paths-u-sample1,ard-reuse"])
    table, figure = frontier.write_report(groups, passes, args, "python benchmarks/frontier.py --table-only")
    text = table.read_text()
    assert "Not trained yet: ard-reuse." in text and "Δ AutoAttack vs paths" in text
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 10_000
    saved = json.loads((tmp_path / "frontier.json").read_text())
    assert set(saved) == {"ard", "paths", "paths-u-sample1", "pgd-at"}
    with pytest.raises(SystemExit):
        frontier.parse_args(["--only", "paths-fast"])


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


def test_replay_count_equals_the_count_of_the_whole_run(tmp_path):
    out = tmp_path / "out"
    args = frontier.parse_args([
        "--out", str(out), "--data", "digits", "--steps", "2", "--batch-size", "32", "--val-size", "100",
        "--replay-images", "80", "--channels-last", "off",
    ])  # fmt: skip
    record = {"student": "smallcnn", "lr": 0.01, "epochs": 2}  # what a method-table record says
    replay = frontier.replay_passes("pgd-at", record, args)
    # 80 images are 2 full batches of 32 (the loader drops the rest); per image and epoch 2 attack
    # steps (forward + input backward) and one training step
    assert replay["counted"] == {"student_forward": 2 * 64 * 3, "student_backward": 2 * 64 * 3,
                                 "teacher_forward": 0, "teacher_backward": 0}  # fmt: skip
    assert replay["training_images"] == len(data.load("digits", "train")) - 100
    # the whole run, counted by the same hooks
    command, flags = frontier.run_config("pgd-at", 0, 0.01, 2, tmp_path / "full", argparse.Namespace(
        **{**vars(args), "student": "smallcnn"}))  # fmt: skip
    counter = frontier.PassCounter()
    with frontier.counting_passes(counter):
        train_from_config(command, load_config(flags={**flags, "eval_every": 0}), quiet=True)
    assert replay["passes"] == counter.as_dict()
    assert json.loads((out / "passes" / "pgd-at.json").read_text()) == replay  # cached for the next call
    assert frontier.replay_passes("pgd-at", record, args) == replay
    assert set(replay["forward_macs"]) == {"student"} and replay["forward_macs"]["student"] > 0


def test_forward_multiply_adds_by_hand():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    # conv: 3 x 4 x 4 outputs of 2 x 3 x 3 multiply-adds each; linear: 48 x 5
    assert frontier.forward_macs(model, (2, 6, 6)) == 3 * 4 * 4 * 2 * 3 * 3 + 48 * 5
    grouped = nn.Conv2d(4, 4, 3, groups=4, padding=1)
    assert frontier.forward_macs(grouped, (4, 5, 5)) == 4 * 5 * 5 * 1 * 3 * 3


def test_labels_are_method_table_entries_that_build(digits_train):
    for label in ("pgd-at", "ard", "rslad", "adaad", "paths", "paths-u-sample1", "ard-reuse", "fgsm-rs"):
        assert label in frontier.LABELS
    assert frontier.ENTRIES["ard-reuse"][1] == {"reuse_steps": 1}
    teacher = tiny_cnn(seed=2)
    run_attack = {"eps": 0.1, "step_size": None, "steps": 5, "norm": "linf"}  # what the run fills in
    for label in frontier.LABELS:
        method, options, _ = frontier.ENTRIES[label]
        resolved = methods.resolve_run_options(method, options, run_attack)
        extra = {"teacher": teacher} if methods.spec(method).needs_teacher else {}
        built = methods.spec(method).build(resolved, **extra, facts=methods.RunFacts(num_samples=100))
        assert all(built.options.to_dict()[k] == v for k, v in options.items())
