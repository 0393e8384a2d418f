"""benchmarks/make_zoo_entry.py: adding an evaluation to an existing entry checks the weights hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustdistill.models import zoo
from tests import benchmark_script

make_zoo_entry = benchmark_script.load("make_zoo_entry")


def _entry(root: Path) -> Path:
    entry = root / "toy"
    entry.mkdir(parents=True)
    (entry / zoo.RECORD).write_text(json.dumps({"name": "toy", "sha256": "ab" * 32, "evaluations": [{"n": 1}]}))
    return entry


def test_an_evaluation_of_the_same_weights_is_appended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "ROOT", tmp_path)
    entry = _entry(tmp_path)
    evaluation = tmp_path / "aa.json"
    payload = {"checkpoint_sha256": "ab" * 32, "accuracy": {"autoattack": 0.7}, "per_sample_worst_case": [1, 0]}
    evaluation.write_text(json.dumps(payload))
    make_zoo_entry.main(["--name", "toy", "--evaluation", str(evaluation), "robustdistill evaluate ..."])
    record = json.loads((entry / zoo.RECORD).read_text())
    assert record["evaluations"][0] == {"n": 1}
    added = record["evaluations"][1]
    assert added["accuracy"] == {"autoattack": 0.7} and added["command"] == "robustdistill evaluate ..."
    assert "per_sample_worst_case" not in added


def test_an_evaluation_of_other_weights_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "ROOT", tmp_path)
    entry = _entry(tmp_path)
    before = (entry / zoo.RECORD).read_text()
    evaluation = tmp_path / "aa.json"
    evaluation.write_text(json.dumps({"checkpoint_sha256": "cd" * 32, "accuracy": {}}))
    with pytest.raises(SystemExit, match="SHA-256 differs"):
        make_zoo_entry.main(["--name", "toy", "--evaluation", str(evaluation), "cmd"])
    assert (entry / zoo.RECORD).read_text() == before
