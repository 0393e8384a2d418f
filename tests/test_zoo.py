"""The shipped model zoo: the Fashion-MNIST teacher, its record, and `zoo:NAME` wherever a teacher is taken."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from robustdistill import models, runs
from robustdistill.errors import ConfigError
from tests.clirun import run_cli
from tests.conftest import fashion_available

NAME = "fashion-mnist-pgd-at"


def test_the_fashion_mnist_teacher_ships_with_its_record() -> None:
    assert NAME in models.zoo.names()
    folder = models.zoo.entry_dir(NAME)
    record = models.zoo.record(NAME)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert record["sha256"] == digest == json.loads((folder / "model.json").read_text())["sha256"]
    assert record["dataset"] == "fashion-mnist" and record["eps"] == pytest.approx(0.1)
    assert "robustdistill train-teacher" in record["training"]["command"]
    by_attack = {}
    for evaluation in record["evaluations"]:
        assert evaluation["checkpoint_sha256"] == digest and "robustdistill evaluate" in evaluation["command"]
        for attack, accuracy in evaluation["accuracy"].items():
            by_attack.setdefault(attack, (accuracy, evaluation["n_examples"]))
    # clean and PGD-20 on the whole test split, AutoAttack (when recorded) on at least 1000 images
    assert by_attack["clean"][1] == 10000 and by_attack["pgd-20"][1] == 10000
    assert 0.5 < by_attack["pgd-20"][0] <= by_attack["clean"][0]
    if "autoattack" in by_attack:
        assert by_attack["autoattack"][1] >= 1000 and by_attack["autoattack"][0] <= by_attack["clean"][0]


@pytest.mark.skipif(not fashion_available(), reason="needs the Debian package dataset-fashion-mnist")
def test_the_shipped_teacher_reproduces_its_recorded_clean_accuracy() -> None:
    from robustdistill import data
    from robustdistill.evaluate import attack_suite

    test = data.load("fashion-mnist", "test")
    record = attack_suite(models.zoo.load(NAME), test, attacks=["clean"], eps=0.1, progress=False)
    recorded = next(e for e in models.zoo.record(NAME)["evaluations"] if "clean" in e["accuracy"])
    assert record["accuracy"]["clean"] == pytest.approx(recorded["accuracy"]["clean"], abs=1e-6)


def test_zoo_names_resolve_and_typos_get_a_suggestion() -> None:
    assert runs.resolve_weights(f"zoo:{NAME}") == models.zoo.entry_dir(NAME) / "model.safetensors"
    teacher = models.zoo.load(NAME)
    assert not teacher.training and teacher.spec["num_classes"] == 10
    assert runs.trained_on(f"zoo:{NAME}") == "fashion-mnist"
    with pytest.raises(ConfigError, match=f"Did you mean '{NAME}'"):
        models.zoo.entry_dir("fashion-mnist-pgdat")


def test_zoo_command_lists_the_measured_accuracies(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    outcome = run_cli(["zoo"], real=True)
    assert outcome.code == 0, outcome.stderr
    clean = next(e for e in models.zoo.record(NAME)["evaluations"] if "clean" in e["accuracy"])["accuracy"]["clean"]
    assert f"zoo:{NAME}" in outcome.stderr and f"{100 * clean:.2f} (10000)" in outcome.stderr


@pytest.mark.skipif(not fashion_available(), reason="needs the Debian package dataset-fashion-mnist")
def test_distill_and_evaluate_from_the_zoo_teacher(tmp_path) -> None:
    run_dir = tmp_path / "student"
    outcome = run_cli([
        "distill", "--teacher", f"zoo:{NAME}", "--data", "fashion-mnist", "--model", "lenet-small",
        "--method", "rslad", "--subset", "256", "--val-size", "64", "--epochs", "1", "--steps", "2",
        "--run-dir", str(run_dir), "--quiet", "eval_n=64",
    ])  # fmt: skip
    assert outcome.code == 0, outcome.stderr
    assert "near chance" not in outcome.stderr and "cross-task" not in outcome.stderr
    assert f"teacher: zoo:{NAME}" in (run_dir / "config.yaml").read_text()
    student = models.load(run_dir / "model.safetensors")
    assert torch.isfinite(student(torch.rand(2, 1, 28, 28))).all()
    out = tmp_path / "teacher.json"
    outcome = run_cli([
        "evaluate", "--checkpoint", f"zoo:{NAME}", "--data", "fashion-mnist", "--attacks", "clean",
        "--n", "200", "--json", str(out),
    ])  # fmt: skip
    assert outcome.code == 0, outcome.stderr
    assert json.loads(out.read_text())["accuracy"]["clean"] > 0.8


@pytest.mark.skipif(not fashion_available(), reason="needs the Debian package dataset-fashion-mnist")
def test_demo_starts_from_the_zoo_teacher(tmp_path, capsys) -> None:
    from robustdistill.demo import run_demo

    root = tmp_path / "demo"
    run_demo(size="tiny", run_dir=root, data="fashion-mnist", quiet=True, report=False, methods=("kd",))
    assert f"zoo:{NAME}" in capsys.readouterr().err
    shipped = models.zoo.entry_dir(NAME) / "model.safetensors"
    assert (root / "teacher" / "model.safetensors").read_bytes() == shipped.read_bytes()
    assert f"teacher: zoo:{NAME}" in (root / "kd" / "config.yaml").read_text()
