"""Shared fixtures: small real data (scikit-learn digits, Fashion-MNIST when installed) and tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustdistill import data, models

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# Tiny models run fastest on one thread; more threads only add synchronisation on 2 shared cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_train() -> data.ArrayDataset:
    return data.subset(data.load("digits", "train"), 320, seed=0)


@pytest.fixture(scope="session")
def digits_test() -> data.ArrayDataset:
    return data.subset(data.load("digits", "test"), 200, seed=0)


def tiny_cnn(num_classes: int = 10, in_channels: int = 1, seed: int = 0) -> torch.nn.Module:
    """A SmallCNN of a few thousand parameters: fast enough for training inside tests."""
    torch.manual_seed(seed)
    return models.create(
        "smallcnn", num_classes=num_classes, in_channels=in_channels, width=0.25, hidden=32, dropout=0.0
    )


def fashion_available() -> bool:
    return (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()
