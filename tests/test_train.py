"""The training loop: it learns, logs, checkpoints, and a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch

from robustdistill import methods, models
from robustdistill.config import RunConfig
from robustdistill.errors import TrainingError
from robustdistill.runs import epoch_evaluation
from robustdistill.train import fit, read_metrics
from robustdistill.train.checkpoint import list_checkpoints, load_checkpoint
from tests.conftest import tiny_cnn

BASE = dict(
    epochs=2,
    batch_size=32,
    lr=0.05,
    eps=0.1,
    steps=2,
    seed=3,
    deterministic=True,
    eval_every=0,
    log_every=2,
    checkpoint_every=3,
    data="digits",
)


def _run(run_dir, train, *, resume=False, method=None, **extra):
    cfg = RunConfig(**{**BASE, **extra})
    student = tiny_cnn(seed=1)
    method = method or methods.create("pgd-at", eps=0.1, steps=2)
    fit(
        student,
        method,
        train,
        config=cfg,
        run_dir=run_dir,
        resume=resume,
        progress=False,
        augment={"padding": 1, "flip": False},
    )
    return student


def test_training_lowers_the_loss_and_writes_the_run(tmp_path, digits_train, digits_test):
    cfg = RunConfig(
        **{**BASE, "epochs": 3, "lr": 0.2, "eval_every": 1, "eval_n": 100, "eval_attacks": ["clean", "pgd-5"]}
    )
    student = tiny_cnn(seed=1)
    result = fit(
        student,
        methods.create("standard"),
        digits_train,
        config=cfg,
        run_dir=tmp_path,
        evaluation=epoch_evaluation(cfg, digits_test),
        progress=False,
    )
    history = read_metrics(tmp_path)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["eval_clean"] > 0.2  # chance is 0.1
    assert history[-1]["eval_pgd-5"] <= history[-1]["eval_clean"]
    assert result.global_step == 3 * (len(digits_train) // 32)
    reloaded = models.load(tmp_path / "model.safetensors")
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(reloaded(x), student.eval()(x))
    assert json.loads((tmp_path / "model.json").read_text())["arch"] == "smallcnn"


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path, digits_train, monkeypatch):
    reference = _run(tmp_path / "a", digits_train)

    crashing = methods.create("pgd-at", eps=0.1, steps=2)
    original = type(crashing).compute
    calls = {"n": 0}

    def crash_at_step_14(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14:  # mid second epoch, two steps after a checkpoint
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(crashing), "compute", crash_at_step_14)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", digits_train, method=crashing)
    monkeypatch.setattr(type(crashing), "compute", original)
    assert list_checkpoints(tmp_path / "b" / "checkpoints")
    resumed = _run(tmp_path / "b", digits_train, resume=True)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    epochs_a = [r["train_loss"] for r in read_metrics(tmp_path / "a")]
    epochs_b = [r["train_loss"] for r in read_metrics(tmp_path / "b")]
    assert epochs_a == pytest.approx(epochs_b, abs=1e-6)


def test_non_finite_loss_stops_with_the_step(tmp_path, digits_train):
    class Exploding(methods.Method):
        name = "exploding"

        def compute(self, student, x, y, index):
            out = student(x).sum() * float("nan")
            return {"loss": out, "nan_term": out.detach()}

    with pytest.raises(TrainingError, match=r"non-finite loss at step 1 \(terms: loss, nan_term\)"):
        _run(tmp_path, digits_train, method=Exploding())
    assert list_checkpoints(tmp_path / "checkpoints"), "the initial good checkpoint is kept"


def test_batch_larger_than_data_is_a_clear_error(tmp_path, digits_train):
    with pytest.raises(TrainingError, match="fewer than one batch"):
        _run(tmp_path, digits_train, batch_size=4096)


def test_ema_weights_are_saved(tmp_path, digits_train):
    _run(tmp_path, digits_train, method=methods.create("standard"), ema_decay=0.9, epochs=1)
    ema = models.load(tmp_path / "model_ema.safetensors")
    raw = models.load(tmp_path / "model.safetensors")
    assert any(not torch.equal(a, b) for a, b in zip(ema.state_dict().values(), raw.state_dict().values(), strict=True))


def test_fit_calls_the_evaluation_callback_when_due_on_the_model_it_saves(tmp_path, digits_train):
    class Recorder:
        label = "a recorded probe"

        def __init__(self):
            self.models = []

        def __call__(self, model):
            self.models.append(model)
            return {"eval_probe": float(len(self.models))}

    recorder = Recorder()
    student = tiny_cnn(seed=1)
    cfg = RunConfig(**{**BASE, "epochs": 3, "eval_every": 2, "ema_decay": 0.9})
    result = fit(
        student, methods.create("standard"), digits_train, config=cfg, run_dir=tmp_path, evaluation=recorder,
        progress=False,
    )  # fmt: skip
    assert [r.get("eval_probe") for r in result.history] == [None, 1.0, 2.0]  # epoch 2, then the last
    assert [r.get("eval_probe") for r in read_metrics(tmp_path)] == [None, 1.0, 2.0]
    assert len(recorder.models) == 2 and all(m is not student for m in recorder.models)  # the EMA model


def test_a_checkpoint_holds_the_training_state_of_format_1(tmp_path, digits_train):
    """The payload keys of format 1: checkpoints written before the training-state split still resume."""
    _run(tmp_path, digits_train, method=methods.create("standard"), epochs=1, ema_decay=0.9)
    state = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[0])
    assert state["format"] == 1
    assert set(state) == {
        "format", "config", "model", "method", "optimizer", "scheduler", "ema", "swa", "accumulator", "epoch",
        "batch", "global_step", "rng", "teachers",
    }  # fmt: skip
    assert (state["epoch"], state["batch"], state["global_step"]) == (1, 0, len(digits_train) // 32)
    assert state["ema"] is not None and state["swa"] is None
    assert set(state["rng"]) >= {"torch", "python", "numpy"}
