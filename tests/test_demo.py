"""The demo's smallest size end to end: teacher, four students, attacks, table, report with figures."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest

from robustdistill.demo import SIZES, run_demo


def test_tiny_demo_writes_results_and_report(tmp_path):
    report = run_demo(size="tiny", run_dir=tmp_path / "demo", data="digits", quiet=True)
    root = tmp_path / "demo"
    assert report == root / "report.md"
    for name in ("teacher", *SIZES["tiny"].methods):
        record = json.loads((root / name / "results.json").read_text())
        assert set(record["accuracy"]) >= {"clean", "pgd-20", "cw", "apgd-ce"}
        assert record["accuracy"]["pgd-20"] <= record["accuracy"]["clean"]
    text = report.read_text()
    figures = sorted((root / "figures").glob("*.png"))
    assert len(figures) >= 4  # curves, eps sweep, paths weights, adversarial examples
    for figure in figures:
        assert figure.name in text
        image = mpimg.imread(figure)
        assert image.shape[0] > 100 and image.std() > 0.01, f"{figure.name} looks blank"


def test_rerun_reuses_the_teacher(tmp_path, capsys):
    kwargs = dict(size="tiny", run_dir=tmp_path / "demo", data="digits", quiet=True, report=False, methods=("kd",))
    run_demo(**kwargs)
    stamp = (tmp_path / "demo" / "teacher" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    run_demo(**kwargs)
    assert (tmp_path / "demo" / "teacher" / "model.safetensors").stat().st_mtime_ns == stamp
    assert "reusing the teacher" in capsys.readouterr().err


def test_unknown_size_is_refused(tmp_path):
    from robustdistill.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown demo size"):
        run_demo(size="huge", run_dir=tmp_path)
