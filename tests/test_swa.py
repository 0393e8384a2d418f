"""SWA of the student: the average of the epoch-end weights, BatchNorm refreshed, exact resume."""

from __future__ import annotations

import pytest
import torch

from robustdistill import methods, models
from robustdistill.config import RunConfig, build
from robustdistill.errors import ConfigError
from robustdistill.train import fit, read_metrics
from robustdistill.train.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint

BASE = dict(
    epochs=3,
    swa_start=2,
    batch_size=32,
    lr=0.05,
    seed=3,
    deterministic=True,
    eval_every=0,
    log_every=5,
    keep_checkpoints=20,
    data="digits",
)
STEPS_PER_EPOCH = 10  # 320 digits in batches of 32


def student() -> models.Classifier:
    """A BatchNorm net at 1/8 width: 8 channels into the first strided 1x1 shortcut. At 1/16 (4 channels)
    oneDNN 3.12 (torch 2.13) corrupts the heap in that conv's weight gradient on AVX2 CPUs: single-channel
    batches look channels_last to torch, and its channels_last 1x1 stride-2 kernel fails below 8 channels."""
    torch.manual_seed(1)
    return models.create("preact-resnet-18", num_classes=10, in_channels=1, width=0.125)


def run(run_dir, train, *, resume=False, method=None, **extra) -> models.Classifier:
    net = student()
    fit(
        net,
        method or methods.create("pgd-at", eps=0.1, steps=1),
        train,
        config=RunConfig(**{**BASE, **extra}),
        run_dir=run_dir,
        resume=resume,
        progress=False,
        augment={"padding": 1, "flip": False},
    )
    return net


def test_the_average_is_the_mean_of_the_averaged_epochs_with_refreshed_batchnorm(tmp_path, digits_train):
    run(tmp_path, digits_train, method=methods.create("standard"))
    ends = [load_checkpoint(checkpoint_path(tmp_path / "checkpoints", e * STEPS_PER_EPOCH)) for e in (1, 2, 3)]
    averaged = models.load(tmp_path / "model_swa.safetensors")
    for name, _ in averaged.named_parameters():  # epochs 2 and 3 (swa_start=2), not epoch 1
        expected = (ends[1]["model"][name] + ends[2]["model"][name]) / 2
        torch.testing.assert_close(averaged.state_dict()[name], expected, atol=1e-6, rtol=0)
    assert not torch.allclose(averaged.conv1.weight, ends[2]["model"]["conv1.weight"])
    assert [r["swa_epochs"] for r in read_metrics(tmp_path) if "swa_epochs" in r] == [1, 2]

    # BatchNorm: the plain average over the in-order training batches of the statistics of the first
    # BatchNorm's input, conv1 of the normalised images, under the averaged weights.
    images = torch.as_tensor(digits_train.images, dtype=torch.float32) / 255
    with torch.no_grad():
        maps = [averaged.conv1(averaged.normalize(x)) for x in images.split(32)]
    mean = torch.stack([m.mean((0, 2, 3)) for m in maps]).mean(0)
    var = torch.stack([m.transpose(0, 1).flatten(1).var(1, unbiased=True) for m in maps]).mean(0)
    bn = averaged.layer1[0].bn1
    torch.testing.assert_close(bn.running_mean, mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(bn.running_var, var, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(bn.running_mean, ends[2]["model"]["layer1.0.bn1.running_mean"])
    assert int(bn.num_batches_tracked) == STEPS_PER_EPOCH


def test_swa_leaves_the_student_trajectory_alone(tmp_path, digits_train):
    with_swa = run(tmp_path / "swa", digits_train, method=methods.create("standard"))
    without = run(tmp_path / "plain", digits_train, method=methods.create("standard"), swa_start=None)
    for (name, a), b in zip(with_swa.state_dict().items(), without.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not (tmp_path / "plain" / "model_swa.safetensors").exists()


def test_resume_with_swa_is_bit_identical(tmp_path, digits_train, monkeypatch):
    run(tmp_path / "a", digits_train, checkpoint_every=4)

    crashing = methods.create("pgd-at", eps=0.1, steps=1)
    original = type(crashing).compute
    calls = {"n": 0}

    def crash_at_step_27(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 27:  # mid third epoch: one epoch already averaged, a checkpoint at step 24
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(crashing), "compute", crash_at_step_27)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", digits_train, method=crashing, checkpoint_every=4)
    monkeypatch.setattr(type(crashing), "compute", original)
    assert list_checkpoints(tmp_path / "b" / "checkpoints")[0].name == "step-000000024.ckpt"
    run(tmp_path / "b", digits_train, resume=True, checkpoint_every=4)
    for name in ("model_swa.safetensors", "model.safetensors"):
        a, b = models.load(tmp_path / "a" / name), models.load(tmp_path / "b" / name)
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y), (name, key)
    last_a = load_checkpoint(list_checkpoints(tmp_path / "a" / "checkpoints")[0])["swa"]
    last_b = load_checkpoint(list_checkpoints(tmp_path / "b" / "checkpoints")[0])["swa"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_swa_start_after_the_last_epoch_is_refused():
    with pytest.raises(ValueError, match="swa_start is epoch 4 but the run has 3 epochs"):
        RunConfig(epochs=3, swa_start=4)
    with pytest.raises(ConfigError, match="swa_start"):
        build({"epochs": 3, "swa_start": 0})
