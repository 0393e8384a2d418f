"""Kill `train-teacher` and `distill` with SIGKILL at chosen points, resume, get the same bits.

The kill points come from the test-only hook in src/robustdistill/train/faults.py
(`ROBUSTDISTILL_FAULT=kill-after-step:N` / `kill-during-checkpoint:N`). Every run here has
4 steps an epoch and 2 epochs; with `checkpoint_every=2` checkpoints are written at steps
0, 2, 4 (end of epoch 1), 6 and 8 (end of epoch 2), and the two newest are kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from robustdistill.lock import LOCK_NAME
from robustdistill.train.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from tests.clirun import SMALL, assert_ok, assert_same_weights, run_cli, warm_up

TIMING = ("seconds", "images_per_s")


def teacher_args(run_dir: Path, *extra: str) -> list[str]:
    return ["train-teacher", *SMALL, "--method", "pgd-at", "checkpoint_every=2", "--run-dir", str(run_dir), *extra]


DISTILL = {
    "rslad": ["--method", "rslad", "ema_decay=0.9"],  # with an EMA of the weights
    "gacd": ["--method", "gacd", "--method-opt", "estimator=nce", "--method-opt", "nce_k=8",
             "--method-opt", "feat_dim=16"],
    "mtard": ["--method", "mtard"],
    "iad": ["--method", "iad", "--method-opt", "warmup_epochs=1"],
    "peeraid": ["--method", "peeraid"],  # no teacher: a peer trained with the student
}  # fmt: skip


def distill_args(method: str, teacher: Path, run_dir: Path, *extra: str) -> list[str]:
    teacher_flag = [] if method == "peeraid" else ["--teacher", str(teacher)]
    args = ["distill", *SMALL, *teacher_flag, *DISTILL[method], "checkpoint_every=2"]
    if method == "mtard":
        args += ["--natural-teacher", str(teacher)]
    return [*args, "--run-dir", str(run_dir), *extra]


def metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the run (the stale lock a SIGKILLed run leaves is taken over and removed: not a result)."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != LOCK_NAME
    }


def temporaries(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def assert_same_state(a: Path, b: Path) -> None:
    """The final training states (model, method buffers such as memory banks, optimiser) are equal bitwise."""
    first = load_checkpoint(checkpoint_path(a / "checkpoints", 8))
    second = load_checkpoint(checkpoint_path(b / "checkpoints", 8))
    for part in ("model", "method", "ema"):
        if first[part] is None:
            assert second[part] is None
            continue
        assert first[part].keys() == second[part].keys(), part
        for key, value in first[part].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, second[part][key]) or (
                    value.isnan().all() and second[part][key].isnan().all()
                ), f"{part}.{key}"
    moments_a = [s["momentum_buffer"] for s in first["optimizer"]["state"].values()]
    moments_b = [s["momentum_buffer"] for s in second["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(moments_a, moments_b, strict=True))
    assert (first["epoch"], first["batch"], first["global_step"]) == (2, 0, 8)


def assert_same_run(reference: Path, resumed: Path) -> None:
    assert_same_weights(reference / "model.safetensors", resumed / "model.safetensors")
    if (reference / "model_ema.safetensors").exists():
        assert_same_weights(reference / "model_ema.safetensors", resumed / "model_ema.safetensors")
    assert_same_state(reference, resumed)
    assert metrics(resumed) == metrics(reference), "metrics.jsonl differs (lost or duplicated records)"
    assert not temporaries(resumed), "temporary files left behind"


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    warm_up()


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> Path:
    """An uninterrupted `train-teacher` run: the reference of the teacher tests and the teacher of the rest."""
    run_dir = tmp_path_factory.mktemp("crash") / "teacher"
    assert_ok(run_cli(teacher_args(run_dir)))
    return run_dir


def test_train_teacher_killed_mid_epoch_and_while_checkpointing_resumes_bit_identically(tmp_path, teacher):
    """Fresh `python -m robustdistill` processes: killed after step 3, killed half-way through writing
    the checkpoint of step 6, resumed twice: the final weights equal the uninterrupted run's bit for bit."""
    run = tmp_path / "run"
    first = run_cli(teacher_args(run), fault="kill-after-step:3", real=True)
    assert first.killed, first.stderr
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step-000000002.ckpt", "step-000000000.ckpt"]
    assert not (run / "model.safetensors").exists()

    second = run_cli(teacher_args(run, "--resume"), fault="kill-during-checkpoint:6")
    assert second.killed, second.stderr
    partial = temporaries(run)
    assert len(partial) == 1 and partial[0].name.startswith(".step-000000006.ckpt.tmp")
    assert not checkpoint_path(run / "checkpoints", 6).exists()
    assert len(metrics(run)) == 1, "epoch 1 was logged before the kill"

    third = run_cli(teacher_args(run, "--resume"), real=True)
    assert_ok(third)
    assert_same_run(teacher, run)


@pytest.mark.parametrize(
    ("method", "faults"),
    [
        ("rslad", ["kill-after-step:5"]),  # mid epoch 2, one step past the checkpoint of step 4
        ("gacd", ["kill-after-step:3", "kill-during-checkpoint:4"]),  # memory bank; epoch-end checkpoint torn
        ("mtard", ["kill-after-step:7"]),  # adaptive weights of the two teachers
        ("iad", ["kill-during-checkpoint:2", "kill-after-step:6"]),  # warm-up ends with epoch 1
        ("peeraid", ["kill-after-step:5"]),  # the peer's weights, BN statistics and momentum buffers
    ],
)
def test_distill_killed_and_resumed_equals_uninterrupted(tmp_path, teacher, method, faults):
    reference = tmp_path / "reference"
    assert_ok(run_cli(distill_args(method, teacher, reference)))
    run = tmp_path / "run"
    for number, fault in enumerate(faults):
        outcome = run_cli(distill_args(method, teacher, run, *(["--resume"] if number else [])), fault=fault)
        assert outcome.killed, outcome.stderr
    assert_ok(run_cli(distill_args(method, teacher, run, "--resume")))
    assert_same_run(reference, run)


def _damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    elif how == "flipped-byte":
        raw[len(raw) // 2] ^= 0x01
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncated", "flipped-byte", "empty"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, teacher, how):
    run = tmp_path / "run"
    assert run_cli(teacher_args(run), fault="kill-after-step:7").killed
    newest = checkpoint_path(run / "checkpoints", 6)
    assert list_checkpoints(run / "checkpoints")[0] == newest
    _damage(newest, how)
    resumed = run_cli(teacher_args(run, "--resume"))
    assert_ok(resumed)
    warnings = [line for line in resumed.lines() if line.startswith("warning:")]
    assert any(newest.name in line and "falling back" in line for line in warnings), resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert_same_run(teacher, run)


def test_only_damaged_checkpoints_is_a_one_line_error_and_nothing_is_deleted(tmp_path):
    run = tmp_path / "run"
    assert run_cli(teacher_args(run), fault="kill-after-step:3").killed
    for path, how in zip(list_checkpoints(run / "checkpoints"), ["flipped-byte", "empty"], strict=True):
        _damage(path, how)
    before = snapshot(run)
    outcome = run_cli(teacher_args(run, "--resume"))
    assert outcome.code == 1
    errors = [line for line in outcome.lines() if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("error: --resume was given but"), outcome.stderr
    assert "no valid checkpoint" in errors[0]
    assert snapshot(run) == before, "the damaged checkpoints are kept for inspection, nothing else changes"


def test_resuming_a_finished_run_leaves_its_results_alone(tmp_path, teacher):
    run = tmp_path / "run"
    shutil.copytree(teacher, run)
    before = snapshot(run)
    assert_ok(run_cli(teacher_args(run, "--resume")))
    assert snapshot(run) == before


def test_resume_with_another_configuration_is_refused(tmp_path):
    run = tmp_path / "run"
    assert run_cli(teacher_args(run), fault="kill-after-step:3").killed
    outcome = run_cli(teacher_args(run, "--resume", "--lr", "0.5"))
    assert outcome.code == 1
    assert outcome.lines() == [outcome.lines()[-1]] and outcome.lines()[-1].startswith("error: --resume with a")
    assert "lr was 0.05, now 0.5" in outcome.stderr
    assert not (run / "config.yaml").read_text().count("lr: 0.5"), "the run keeps the configuration it began with"


def test_non_finite_loss_names_the_step_and_keeps_only_good_checkpoints(tmp_path):
    """An exploding learning rate: the run stops with one line naming the step and the loss terms;
    no checkpoint written after the loss went bad survives (even between two log lines)."""
    run = tmp_path / "run"
    args = ["train-teacher", *SMALL, "--method", "standard", "--lr", "1e30", "checkpoint_every=1", "log_every=50"]
    outcome = run_cli([*args, "--run-dir", str(run)])
    assert outcome.code == 1, outcome.stderr
    (line,) = outcome.lines()
    assert line.startswith("error: non-finite loss at step ") and "(terms: " in line, line
    bad_step = int(line.split("at step ")[1].split()[0])
    kept = list_checkpoints(run / "checkpoints")
    assert kept, "the last good checkpoint is kept"
    for path in kept:
        state = load_checkpoint(path)
        assert state["global_step"] < bad_step
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()), path.name
    assert not (run / "model.safetensors").exists()


def test_every_random_generator_is_saved_and_restored(tmp_path):
    """torch, Python and NumPy streams continue after a checkpoint round trip as if never interrupted."""
    import random

    import numpy as np

    from robustdistill.train.checkpoint import save_checkpoint
    from robustdistill.train.state import rng_state, set_rng_state

    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    path = save_checkpoint({"rng": rng_state(), "global_step": 0}, tmp_path / "rng.ckpt")
    expected = (torch.rand(3), random.random(), np.random.rand(3))
    torch.manual_seed(10)
    random.seed(20)
    np.random.seed(30)
    set_rng_state(load_checkpoint(path)["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1]
    assert np.array_equal(np.random.rand(3), expected[2])


def test_half_written_metrics_line_is_dropped_on_resume(tmp_path):
    """A process killed while appending to metrics.jsonl leaves half a line; resume drops it."""
    from robustdistill.runtime.metrics import MetricsLog, read_metrics

    log = MetricsLog(tmp_path, tensorboard=False)
    log.write({"kind": "epoch", "epoch": 1, "step": 4})
    log.write({"kind": "epoch", "epoch": 2, "step": 8})
    with open(tmp_path / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "epoch", "epo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [4, 8]
    log.truncate_after(4)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"kind": "epoch", "epoch": 1, "step": 4}\n'


def test_overwrite_replaces_every_result_file(tmp_path):
    """`--overwrite` removes all results of the old run (EMA weights included) before the new one starts."""
    run = tmp_path / "run"
    assert_ok(run_cli(teacher_args(run, "--epochs", "1", "ema_decay=0.9")))
    assert (run / "model_ema.safetensors").exists()
    refused = run_cli(teacher_args(run, "--epochs", "1"))
    assert refused.code == 1 and "already holds results" in refused.stderr
    assert_ok(run_cli(teacher_args(run, "--epochs", "1", "--overwrite")))
    assert not (run / "model_ema.safetensors").exists() and not (run / "model_ema.json").exists()
    assert len(metrics(run)) == 1
