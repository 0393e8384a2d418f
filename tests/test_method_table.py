"""benchmarks/method_table.py: a student's weights are kept next to its record and load from there."""

from __future__ import annotations

from pathlib import Path

import torch

from robustdistill import models
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
    assert run_row == "| pgd-at seed 0 | 54.0 | 59.0 | 55.00 | 58.00 |"
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
