"""The command line end to end on real data: every method trains through `distill`/`train-teacher`,
evaluation writes a record, and bad input exits non-zero with one line and no traceback."""

from __future__ import annotations

import json
import math

import pytest

from robustdistill import methods, models
from robustdistill.train import read_metrics
from tests.clirun import main_exit_code
from tests.conftest import fashion_available

pytestmark = pytest.mark.skipif(not fashion_available(), reason="needs the Debian package dataset-fashion-mnist")

TINY = [
    "--data", "fashion-mnist", "--subset", "200", "--test-subset", "100", "--batch-size", "50", "--epochs", "1",
    "--steps", "1", "--model", "smallcnn", "model_opts.width=0.25", "model_opts.hidden=16", "eval_n=50",
    "eval_attacks=[clean,pgd-2]", "--quiet",
]  # fmt: skip


def run(args: list[str], capsys) -> tuple[int, str]:
    code = main_exit_code(args)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    for name, method in (("robust", "pgd-at"), ("natural", "standard")):
        args = ["train-teacher", *TINY, "--method", method, "--run-dir", str(root / name), "model_opts.width=0.5"]
        assert main_exit_code(args) == 0
    return root


STUDENT_METHODS = [m for m in methods.available() if m not in ("standard",)]


@pytest.mark.parametrize("method", STUDENT_METHODS)
def test_every_method_trains_through_the_command_line(method, teachers, tmp_path, capsys):
    cls = methods.method_class(method)
    command = "distill" if cls.needs_teacher else "train-teacher"
    args = [command, *TINY, "--method", method, "--run-dir", str(tmp_path / method)]
    if cls.needs_teacher:
        args += ["--teacher", str(teachers / "robust")]
    if cls.needs_natural_teacher:
        args += ["--natural-teacher", str(teachers / "natural")]
    code, err = run(args, capsys)
    assert code == 0, err
    record = read_metrics(tmp_path / method)[-1]
    losses = {k: v for k, v in record.items() if k.startswith("train_")}
    assert "train_loss" in losses
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values()), losses
    student = models.load(tmp_path / method / "model.safetensors")
    assert student.spec["num_classes"] == 10


def test_evaluate_writes_a_complete_record(teachers, tmp_path, capsys):
    out = tmp_path / "record.json"
    code, err = run(
        ["evaluate", "--checkpoint", str(teachers / "robust"), "--data", "fashion-mnist", "--attacks",
         "clean,fgsm,pgd-5,cw-5", "--n", "60", "--json", str(out), "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out.read_text())
    accuracy = record["accuracy"]
    assert set(accuracy) == {"clean", "fgsm", "pgd-5", "cw-5", "worst_case"}
    assert accuracy["worst_case"] <= min(accuracy[k] for k in ("clean", "fgsm", "pgd-5", "cw-5"))
    assert record["n_examples"] == 60 and record["eps"] == pytest.approx(0.1)
    assert len(record["checkpoint_sha256"]) == 64
    assert record["environment"]["torch"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train-teacher", "--model", "resnet-81"], "unknown model 'resnet-81'"),
        (["train-teacher", "--data", "cifar11"], "unknown dataset 'cifar11'"),
        (["train-teacher", "--method", "pgd-att"], "unknown method 'pgd-att'"),
        (["train-teacher", "--eps", "0"], "'eps'"),
        (["train-teacher", "--eps", "-0.1"], "'eps'"),
        (["train-teacher", "--steps", "0"], "'steps'"),
        (["train-teacher", "--data", "cifar10", "--data-dir", "/nonexistent/dir"], "cifar"),
        (["distill", "--method", "rslad"], "needs a teacher"),
        (["evaluate", "--checkpoint", "/nonexistent/run", "--data", "fashion-mnist"], "does not exist"),
        (["train-teacher", "epochz=3"], "Did you mean 'epochs'"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, capsys, tmp_path):
    code, err = run([*args, "--run-dir", str(tmp_path / "run")] if args[0] != "evaluate" else args, capsys)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in lines[0]
    assert "Traceback" not in err


def test_teacher_with_other_classes_is_refused(tmp_path, capsys):
    wrong = models.create("smallcnn", num_classes=7, in_channels=1, width=0.25, hidden=16)
    models.save(wrong, tmp_path / "teacher.safetensors")
    code, err = run(
        ["distill", *TINY, "--method", "rslad", "--teacher", str(tmp_path / "teacher.safetensors"), "--run-dir",
         str(tmp_path / "run")],
        capsys,
    )  # fmt: skip
    assert code != 0
    assert "7 classes" in err and "10" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists(), "nothing is written before the inputs are validated"


def test_cross_task_gacd_then_linear_probe_and_structure(teachers, tmp_path, capsys):
    """A Fashion-MNIST teacher makes an animal-mnist student through `distill --method gacd`; `evaluate`
    then fits a linear probe on its frozen features and compares its features with the teacher's."""
    student_args = [a if a != "fashion-mnist" else "animal-mnist" for a in TINY]
    with pytest.warns(UserWarning, match="cross-task transfer, only features are matched and confidence reweighting"):
        code, err = run(
            ["distill", *student_args, "--method", "gacd", "--teacher", str(teachers / "robust"), "--method-opt",
             "estimator=infonce", "--run-dir", str(tmp_path / "gacd")],
            capsys,
        )  # fmt: skip
    assert code == 0, err
    out = tmp_path / "record.json"
    code, err = run(
        ["evaluate", "--checkpoint", str(tmp_path / "gacd"), "--data", "animal-mnist", "--attacks", "clean",
         "--n", "60", "--linear-probe", "--structure", str(teachers / "robust"), "--json", str(out), "--quiet"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out.read_text())
    probe, structure = record["linear_probe"], record["structure"]
    assert probe["n_test"] == 60 and 0.0 <= probe["robust_accuracy"] <= probe["accuracy"] <= 1.0
    assert probe["accuracy"] > 0.2, "a probe on 200 training images of 10 classes beats chance (0.1)"
    assert structure["n"] == 60
    for key in ("cka_clean", "cka_adv", "cka_anchor"):
        assert 0.0 <= structure[key] <= 1.0 + 1e-6, (key, structure[key])
    assert all(math.isfinite(structure[k]) for k in ("corr_dist_clean", "corr_dist_adv", "corr_dist_anchor"))
