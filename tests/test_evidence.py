"""The evidence protocol's pieces: the validation split, the student of the anchor paper, the model zoo,
and the statistics of the method table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robustdistill import data, models
from robustdistill.config import load_config
from robustdistill.errors import ConfigError
from robustdistill.evaluate.compare import decode_correct, encode_correct, mean_std, paired_bootstrap
from robustdistill.runs import load_datasets
from tests.clirun import run_cli


def _multiply_adds(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Multiply-adds of the convolutions and linear layers for one image, counted with forward hooks."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output[0].numel() * module.weight[0].numel()
        elif isinstance(module, nn.Linear):
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.rand(1, *shape))
    for handle in handles:
        handle.remove()
    return total


def test_lenet_small_is_the_anchor_architecture_and_16x_cheaper_than_the_teacher() -> None:
    student = models.create("lenet-small", in_channels=1)
    x = torch.rand(2, 1, 28, 28)
    conv = nn.functional.relu(student.conv2(nn.functional.relu(student.conv1(student.normalize(x)))))
    assert conv.shape == (2, 32, 7, 7)  # 28 -> 14 -> 7, as TensorFlow's SAME padding at stride 2
    logits, features = student.forward_features(x)
    assert logits.shape == (2, 10) and features.shape == (2, 100)
    teacher = models.create("smallcnn", in_channels=1)
    ratio = _multiply_adds(teacher, (1, 28, 28)) / _multiply_adds(student, (1, 28, 28))
    assert ratio >= 10
    assert models.resolve("croce-cnn") == "lenet-small"


def test_validation_split_is_balanced_disjoint_and_seeded(digits_train: data.ArrayDataset) -> None:
    train, val = data.split_validation(digits_train, 50)
    assert len(train) + len(val) == len(digits_train) and len(val) == 50
    assert (train.split, val.split) == ("train", "val")
    counts = torch.bincount(val.labels, minlength=10)
    assert counts.max() - counts.min() <= 1
    held = {image.numpy().tobytes() for image in val.images}
    assert not any(image.numpy().tobytes() in held for image in train.images)
    again = data.split_validation(digits_train, 50)[1]
    assert torch.equal(again.images, val.images)
    other = data.split_validation(digits_train, 50, seed=1)[1]
    assert not torch.equal(other.images, val.images)
    with pytest.raises(ConfigError, match="val_size=0"):
        data.split_validation(digits_train, len(digits_train))


def test_val_is_no_longer_an_alias_of_test() -> None:
    with pytest.raises(ConfigError, match="carved from the training split"):
        data.load("digits", "val")


def test_runs_carve_validation_before_the_training_subset() -> None:
    full = len(data.load("digits", "train"))
    default = load_datasets(load_config(flags={"data": "digits", "subset": 100}))
    assert default.val is not None and len(default.val) == data.default_validation_size(full)
    assert len(default.train) == 100
    train_rows = {bytes(x.numpy().tobytes()) for x in default.train.images}
    assert not any(bytes(x.numpy().tobytes()) in train_rows for x in default.val.images)
    # the validation split does not move with --seed: every seed of a comparison sees the same images
    other_seed = load_datasets(load_config(flags={"data": "digits", "subset": 100, "seed": 3}))
    assert torch.equal(other_seed.val.images, default.val.images)
    none = load_datasets(load_config(flags={"data": "digits", "val_size": 0}))
    assert none.val is None and len(none.train) == full


def test_per_epoch_evaluation_runs_on_the_validation_split(tmp_path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli([
        "train-teacher", "--data", "digits", "--model", "lenet-small", "--method", "standard", "--epochs", "1",
        "--subset", "128", "--val-size", "40", "--run-dir", str(run_dir), "--quiet", "eval_n=500",
        "eval_attacks=[clean]",
    ])  # fmt: skip
    assert result.code == 0, result.stderr
    config = (run_dir / "config.yaml").read_text()
    assert "val_size: 40" in config
    epoch = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    accuracy = epoch["eval_clean"]
    assert round(accuracy * 40) == pytest.approx(accuracy * 40, abs=1e-6)  # a fraction of 40 images, not 360


def test_correctness_strings_round_trip() -> None:
    correct = torch.tensor([True, False, True, True])
    assert encode_correct(correct) == "1011"
    assert decode_correct("1011").tolist() == [1.0, 0.0, 1.0, 1.0]
    with pytest.raises(ConfigError):
        decode_correct("10x1")


def test_mean_std_is_the_sample_standard_deviation() -> None:
    mean, std = mean_std([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82) and std == pytest.approx(0.02)
    assert np.isnan(mean_std([0.5])[1])


def test_paired_bootstrap_interval_covers_the_difference_and_shrinks_with_images() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    b = (rng.random(n) < 0.7).astype(float)
    a = b.copy()
    flip = rng.choice(n, 200, replace=False)  # a is right on 200 images where b is wrong or equal
    a[flip] = 1.0
    diff, low, high = paired_bootstrap(a, b, resamples=2000)
    assert diff == pytest.approx((a - b).mean())
    assert low < diff < high and low > 0
    seeds = np.stack([a, a, b])  # averaging over seeds first: (2a + b) / 3 - b
    assert paired_bootstrap(seeds, b, resamples=500)[0] == pytest.approx(2 / 3 * (a - b).mean())
    _, low_small, high_small = paired_bootstrap(a[:400], b[:400], resamples=2000)
    assert high_small - low_small > high - low
    identical = paired_bootstrap(b, b, resamples=200)
    assert identical == (0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match="same non-empty image set"):
        paired_bootstrap(a[:10], b[:11])


def test_lenet_small_starts_from_a_zero_head_and_learns_with_sgd(digits_train: data.ArrayDataset) -> None:
    torch.manual_seed(0)
    student = models.create("lenet-small", in_channels=1, mean=digits_train.mean, std=digits_train.std)
    x = digits_train.images[:128].float() / 255
    y = digits_train.labels[:128]
    first = nn.functional.cross_entropy(student(x), y)
    assert first.item() == pytest.approx(float(np.log(10)), abs=1e-6)  # zero logits: no blow-up at the start
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(student(x), y).backward()
        optimizer.step()
    assert nn.functional.cross_entropy(student(x), y).item() < 0.5 * first.item()
