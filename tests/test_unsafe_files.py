"""Files that would run code when unpickled are refused by every command; the code never runs."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from robustdistill.train.checkpoint import FORMAT_VERSION, MAGIC, checkpoint_path, list_checkpoints
from tests.clirun import SMALL, main_exit_code, warm_up


class _CreatesFile:
    """Unpickling this calls `open(target, "w")`: the file appearing means the payload ran."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = main_exit_code(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, [line for line in err.splitlines() if line.strip()]


def one_error(lines: list[str]) -> str:
    errors = [line for line in lines if not line.startswith("warning:")]
    assert len(errors) == 1, lines
    assert errors[0].startswith("error: ")
    return errors[0]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    warm_up()
    run_dir = tmp_path_factory.mktemp("unsafe") / "teacher"
    args = ["train-teacher", *SMALL, "--epochs", "1", "--method", "standard", "--run-dir", str(run_dir)]
    assert main_exit_code(args) == 0
    return run_dir


def _evil(path: Path, target: Path, writer: str) -> Path:
    payload = {"state_dict": {"weight": torch.zeros(2)}, "extra": _CreatesFile(target)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=2)
    assert not target.exists()
    return path


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_evaluate_refuses_a_pickle_payload(tmp_path, capsys, writer):
    target = tmp_path / "pwned.txt"
    evil = _evil(tmp_path / "evil.pt", target, writer)
    code, lines = run(["evaluate", "--checkpoint", str(evil), "--data", "digits", "--attacks", "clean"], capsys)
    assert code == 1
    line = one_error(lines)
    assert "weights_only=True" in line and "if you trust this file, convert it" in line, line
    assert not target.exists()


def test_distill_refuses_a_pickle_teacher_and_touches_nothing(tmp_path, capsys):
    target = tmp_path / "pwned.txt"
    evil = _evil(tmp_path / "evil.pth", target, "torch.save")
    run_dir = tmp_path / "student"
    code, lines = run(["distill", *SMALL, "--teacher", str(evil), "--run-dir", str(run_dir)], capsys)
    assert code == 1
    assert "if you trust this file, convert it" in one_error(lines)
    assert not target.exists()
    assert not run_dir.exists(), "the run directory is created only after every input was accepted"


def test_natural_teacher_and_disguised_weights_are_refused(tmp_path, capsys, teacher_dir):
    """A pickle renamed `.safetensors`, with a spec next to it, is parsed as safetensors only."""
    target = tmp_path / "pwned.txt"
    disguised = tmp_path / "fake"
    disguised.mkdir()
    _evil(disguised / "model.safetensors", target, "pickle.dump")
    spec = json.loads((teacher_dir / "model.json").read_text())
    spec.pop("sha256")
    (disguised / "model.json").write_text(json.dumps(spec))
    for flag in ("--teacher", "--natural-teacher"):
        teacher = str(disguised) if flag == "--teacher" else str(teacher_dir)
        natural = ["--natural-teacher", str(disguised)] if flag == "--natural-teacher" else []
        code, lines = run(
            ["distill", *SMALL, "--method", "mtard", "--teacher", teacher, *natural, "--run-dir", str(tmp_path / "r")],
            capsys,
        )
        assert code == 1
        assert "truncated or corrupt" in one_error(lines)
    assert not target.exists()


def test_plain_state_dict_is_refused_with_what_to_do(tmp_path, capsys, teacher_dir):
    plain = tmp_path / "plain.pt"
    from safetensors.torch import load_file

    torch.save(load_file(str(teacher_dir / "model.safetensors")), plain)
    code, lines = run(["evaluate", "--checkpoint", str(plain), "--data", "digits", "--attacks", "clean"], capsys)
    assert code == 1
    assert "plain state dict without the model spec" in one_error(lines)


def test_resume_skips_a_pickle_checkpoint_and_never_runs_it(tmp_path, capsys, teacher_dir):
    """A newest checkpoint whose (hash-valid) payload is pickle code: refused, resume uses the previous one."""
    run_dir = tmp_path / "run"
    shutil.copytree(teacher_dir, run_dir)
    target = tmp_path / "pwned.txt"
    payload = pickle.dumps({"model": _CreatesFile(target)}, protocol=2)
    newest = checkpoint_path(run_dir / "checkpoints", 999)
    newest.write_bytes(MAGIC + bytes([FORMAT_VERSION]) + hashlib.sha256(payload).hexdigest().encode() + payload)
    args = ["train-teacher", *SMALL, "--epochs", "1", "--method", "standard", "--run-dir", str(run_dir), "--resume"]
    with pytest.warns(UserWarning, match="cannot be read safely"):
        code, lines = run(args, capsys)
    assert code == 0, lines
    assert not target.exists()
    assert list_checkpoints(run_dir / "checkpoints")[0] == newest, "the refused file is left for inspection"
