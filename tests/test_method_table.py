"""benchmarks/method_table.py: a student's weights are kept next to its record and load from there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from robustdistill import models
from robustdistill.errors import TrainingError
from tests import benchmark_script

method_table = benchmark_script.load("method_table")


def test_kept_weights_load_by_either_file_and_keep_their_hash(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = models.create("lenet-small").eval()
    weights = models.save(model, tmp_path / "run" / "model.safetensors")
    kept = tmp_path / "out" / "weights" / "pgd-at-seed0.safetensors"
    method_table.keep_weights(weights, kept)
    x = torch.rand(4, 1, 28, 28)
    for path in (kept, kept.with_suffix(".json")):
        torch.testing.assert_close(models.load(path).eval()(x), model(x), rtol=0, atol=0)
    assert method_table.weights_sha256(kept) == method_table.weights_sha256(weights)


def test_the_table_reports_each_runs_validation_curve_and_draws_it(tmp_path: Path) -> None:
    curve = [0.5 + 0.01 * e for e in range(10)]
    record = {"label": "pgd-at", "seed": 0, "accuracy": {"clean": 0.8}, "val_curve_pgd10": curve, "converged": False}
    rows = method_table.curve_rows({"pgd-at": [record]})
    run_row = next(row for row in rows if row.startswith("| pgd-at seed 0"))
    # epoch e holds 49 + e: epochs 5 and 10, then the means of epochs 5-7 (54, 55, 56) and 8-10 (57, 58, 59)
    assert run_row == "| pgd-at seed 0 | PGD-10 | 54.0 | 59.0 | 55.00 | 58.00 |"
    figure = method_table.plot_curves({"pgd-at": [record]}, tmp_path / "val_curves.png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_curve_that_still_rises_is_not_converged_and_a_flat_or_falling_one_is() -> None:
    rising = [0.60, 0.61, 0.62, 0.63, 0.64, 0.65]  # last 3 average 0.64, the 3 before 0.61
    flat = [0.72, 0.73, 0.72, 0.725, 0.73, 0.72]
    falling = [0.75, 0.75, 0.75, 0.74, 0.74, 0.74]
    assert not method_table.converged(rising)
    assert method_table.converged(flat)
    assert method_table.converged(falling)
    assert not method_table.converged(flat[:5])


def test_the_reference_is_judged_on_its_clean_curve_and_robust_methods_on_pgd10() -> None:
    rising_clean = [0.80, 0.82, 0.84, 0.86, 0.88, 0.90]
    flat_pgd = [0.05, 0.05, 0.05, 0.05, 0.05, 0.05]
    standard = {"label": "standard", "group": "reference", "seed": 0, "val_curve_clean": rising_clean}
    pgd_at = {"label": "pgd-at", "group": "baseline", "seed": 0, "val_curve_clean": rising_clean}
    standard["val_curve_pgd10"] = pgd_at["val_curve_pgd10"] = flat_pgd
    assert method_table.selection_curve(standard) == rising_clean
    assert method_table.selection_curve(pgd_at) == flat_pgd
    assert not method_table.converged(method_table.selection_curve(standard))
    assert method_table.converged(method_table.selection_curve(pgd_at))
    rows = method_table.curve_rows({"standard": [standard], "pgd-at": [pgd_at]})
    assert any(row.startswith("| standard seed 0 | clean | 88.0 |") for row in rows)
    assert any(row.startswith("| pgd-at seed 0 | PGD-10 | 5.0 |") for row in rows)


def test_tuning_the_reference_picks_the_learning_rate_with_the_best_validation_clean_accuracy(
    tmp_path: Path, monkeypatch
) -> None:
    # lr 0.01: more robust on validation (PGD-10 0.06 vs 0.01) but less accurate (clean 0.88 vs 0.91)
    logs = {
        0.01: {"eval_clean": 0.88, "eval_pgd-10": 0.06},
        0.05: {"eval_clean": 0.91, "eval_pgd-10": 0.01},
        0.1: {"eval_clean": 0.90, "eval_pgd-10": 0.02},
    }

    def fake_train(label, seed, lr, epochs, run_dir, args):  # the tuning loop, without its training runs
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "epoch": 1, **logs[lr]}) + "\n")
        return run_dir

    monkeypatch.setattr(method_table, "train", fake_train)
    args = method_table.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert method_table.tuned_lr("standard", args) == 0.05
    assert method_table.tuned_lr("pgd-at", args) == 0.01
    record = json.loads((tmp_path / "out" / "tuning" / "standard.json").read_text())
    assert record["val_clean_by_lr"] == {"0.01": 0.88, "0.05": 0.91, "0.1": 0.90}
    assert "clean" in record["criterion"]


def test_tuning_doubles_a_winning_top_rate_measures_each_rate_once_and_refuses_stale_seeds(
    tmp_path: Path, monkeypatch
) -> None:
    scores = {
        "pgd-at": {0.01: 0.62, 0.05: 0.70, 0.1: 0.73, 0.2: 0.71},  # best at 0.1, inside the doubled grid
        "ard": {0.05: 0.60, 0.1: 0.65, 0.2: 0.68, 0.4: 0.69},  # still rising where the cap stops the doubling
    }
    trained: list[tuple[str, float]] = []

    def fake_train(label, seed, lr, epochs, run_dir, args):
        trained.append((label, lr))
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "eval_pgd-10": scores[label][lr]}) + "\n")
        return run_dir

    monkeypatch.setattr(method_table, "train", fake_train)
    flags = ["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]
    narrow = method_table.parse_args([*flags, "--lr-grid", "0.01,0.05", "--lr-extend", "0"])
    assert method_table.tuned_lr("pgd-at", narrow) == 0.05
    wider = method_table.parse_args([*flags, "--lr-grid", "0.01,0.05"])  # the top wins: doubled, twice at most
    assert method_table.tuned_lr("pgd-at", wider) == 0.1
    assert trained == [("pgd-at", lr) for lr in (0.01, 0.05, 0.1, 0.2)]  # 0.01 and 0.05 measured once
    record = json.loads((tmp_path / "out" / "tuning" / "pgd-at.json").read_text())
    assert record["val_pgd10_by_lr"] == {"0.01": 0.62, "0.05": 0.70, "0.1": 0.73, "0.2": 0.71}
    assert record["lr_grid"] == [0.01, 0.05, 0.1, 0.2] and record["chosen_lr"] == 0.1
    capped = method_table.parse_args([*flags, "--lr-grid", "0.05,0.1", "--lr-extend", "2"])
    assert method_table.tuned_lr("ard", capped) == 0.4
    assert [lr for label, lr in trained if label == "ard"] == [0.05, 0.1, 0.2, 0.4]

    (tmp_path / "out" / "runs").mkdir(parents=True)
    (tmp_path / "out" / "runs" / "pgd-at-seed0.json").write_text(json.dumps({"lr": 0.05}))
    run_dir = tmp_path / "work" / "pgd-at-seed0"
    stale = re.escape("trained at lr 0.05, but the tuning now chooses 0.1")
    with pytest.raises(SystemExit, match=stale):
        method_table.check_lr("pgd-at", 0, 0.1, run_dir, wider)
    method_table.check_lr("pgd-at", 0, 0.05, run_dir, wider)
    partial = tmp_path / "work" / "pgd-at-seed1"  # a run interrupted before its record: its config says
    partial.mkdir(parents=True)
    (partial / "config.yaml").write_text("lr: 0.05\n")
    with pytest.raises(SystemExit, match=stale):
        method_table.check_lr("pgd-at", 1, 0.1, partial, wider)
    method_table.check_lr("pgd-at", 2, 0.1, tmp_path / "work" / "pgd-at-seed2", wider)  # nothing trained yet


def test_a_learning_rate_whose_tuning_run_diverges_scores_minus_one_and_the_tuning_goes_on(
    tmp_path: Path, monkeypatch
) -> None:
    def fake_train(label, seed, lr, epochs, run_dir, args):
        if lr == 0.1:  # what training raises on a non-finite loss
            raise TrainingError("non-finite loss at step 15 (terms: loss); lower the learning rate")
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"kind": "epoch", "eval_pgd-10": 0.5 + lr}) + "\n")
        return run_dir

    monkeypatch.setattr(method_table, "train", fake_train)
    args = method_table.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert method_table.tuned_lr("kd", args) == 0.05
    record = json.loads((tmp_path / "out" / "tuning" / "kd.json").read_text())
    assert record["val_pgd10_by_lr"] == {"0.01": 0.51, "0.05": 0.55, "0.1": -1.0}


def test_table_rows_give_each_methods_paired_difference_and_name_the_best_baseline() -> None:
    def record(label: str, group: str, seed: int, correct: str) -> dict:
        accuracy = correct.count("1") / len(correct)
        return {
            "label": label,
            "group": group,
            "seed": seed,
            "accuracy": {"autoattack": accuracy},
            "n_examples": {"autoattack": len(correct)},
            "per_sample": {"autoattack": correct},
        }

    # 8 images: pgd-at right on 4 in both seeds, rslad on 6 (the same 4 plus 2), paths on 5 on average
    groups = {
        "pgd-at": [record("pgd-at", "baseline", s, "11110000") for s in (0, 1)],
        "rslad": [record("rslad", "baseline", s, "11111100") for s in (0, 1)],
        "paths": [record("paths", "headline", 0, "11111000"), record("paths", "headline", 1, "11110100")],
    }
    rows, best = method_table.table_rows(groups, "autoattack")
    assert best == "rslad"
    by_label = {row.split(" | ")[0].strip("| "): row.split(" | ") for row in rows[2:]}
    assert by_label["pgd-at"][-2] == "-"
    assert by_label["rslad"][-2].startswith("+25.00 [") and by_label["rslad"][-1] == "- |"
    assert by_label["paths"][-2].startswith("+12.50 [") and by_label["paths"][-1].startswith("-12.50 [")
    assert by_label["paths"][6] == "62.50 ± 0.00 (8)"  # the autoattack column: mean ± std over the seeds


def test_a_variant_trains_at_its_base_methods_learning_rate_without_tuning(tmp_path: Path, monkeypatch) -> None:
    def no_training(*args, **kwargs):
        raise AssertionError("a variant must not be tuned")

    monkeypatch.setattr(method_table, "train", no_training)
    args = method_table.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    (tmp_path / "out" / "tuning").mkdir(parents=True)
    for base, lr in (("pgd-at", 0.05), ("paths", 0.01)):
        scores = {f"{g:g}": 0.7 if g == lr else 0.6 for g in args.lr_grid}
        (tmp_path / "out" / "tuning" / f"{base}.json").write_text(
            json.dumps({"val_pgd10_by_lr": scores, "chosen_lr": lr})
        )
    assert method_table.tuned_lr("pgd-at-reuse", args) == 0.05
    assert method_table.tuned_lr("fgsm-rs", args) == 0.05  # fast adversarial training: pgd-at's
    assert method_table.tuned_lr("paths-u-sample1", args) == 0.01
    for variant, base in method_table.VARIANT_BASE.items():  # every base is a tuned row of the same method
        assert method_table.ENTRIES[base][2] != "variant"
        assert method_table.ENTRIES[variant][0] in (method_table.ENTRIES[base][0], "fgsm-rs")


def test_a_record_names_the_layout_its_run_trained_in(tmp_path: Path) -> None:
    for setting, used in (("on", "on"), ("off", "off"), ("auto", "off")):  # auto: channels_last on CUDA only
        run = tmp_path / setting
        run.mkdir()
        (run / "config.yaml").write_text(f"device: cpu\nchannels_last: '{setting}'\n")
        assert method_table.layout(run) == used


def test_a_run_that_ends_at_chance_is_reported_as_collapsed_and_still_counted(tmp_path: Path) -> None:
    def record(seed: int, clean_curve: list[float], correct: str) -> dict:
        return {
            "label": "ard",
            "group": "baseline",
            "seed": seed,
            "accuracy": {"clean": correct.count("1") / len(correct)},
            "n_examples": {"clean": len(correct)},
            "per_sample": {"clean": correct},
            "val_curve_clean": clean_curve,
        }

    healthy, dead = record(0, [0.70, 0.84], "1111111100"), record(1, [0.30, 0.10], "1000000000")
    assert not method_table.collapsed(healthy, 10)
    assert method_table.collapsed(dead, 10)  # 10 % with 10 classes: one class for every image
    assert method_table.collapsed(record(2, [0.109], "1"), 10)
    assert not method_table.collapsed(record(2, [0.111], "1"), 10)
    assert not method_table.collapsed({"label": "ard", "seed": 3}, 10)  # no curve: nothing to judge
    args = method_table.parse_args(["--out", str(tmp_path), "--data", "digits"])
    table = method_table.write_table({"ard": [healthy, dead]}, args, "python benchmarks/method_table.py").read_text()
    line = next(row for row in table.splitlines() if row.startswith("Runs collapsed to a constant prediction"))
    assert "within 1 point of chance, 1/10" in line and line.endswith(": ard seed 1.")
    assert "| ard | baseline | 2 | 45.00 ± 49.50 (10) |" in table  # the collapsed seed stays in the mean and std
