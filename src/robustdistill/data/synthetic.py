"""Random uint8 images with random labels, for speed benchmarks and recipe dry-runs; registration."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from robustdistill.data.dataset import ArrayDataset, channel_stats
from robustdistill.data.registry import SPLITS, register_dataset
from robustdistill.errors import DataError


def synthetic(
    num_classes: int = 10,
    shape: Sequence[int] = (3, 32, 32),
    n: int = 1024,
    seed: int = 0,
    split: str = "train",
) -> ArrayDataset:
    """`n` uniformly random images of `shape` `(C, H, W)`, uniform labels; a pure function of the arguments.

    The `test` split draws from a different stream than `train` for the same seed.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1 or n < 0 or num_classes < 1:
        raise DataError(f"synthetic data needs shape (C, H, W) > 0, n >= 0 and num_classes >= 1, got {shape}, {n}.")
    generator = torch.Generator().manual_seed(int(seed) * 2 + (split == "test"))
    images = torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)
    labels = torch.randint(0, num_classes, (n,), generator=generator, dtype=torch.int64)
    mean, std = channel_stats(images)
    return ArrayDataset(images, labels, num_classes, "synthetic", split, mean, std, None)


register_dataset(
    "synthetic",
    files={split: "nothing (random images)" for split in SPLITS},
    build=synthetic,
    options=("num_classes", "shape", "n", "seed"),
)
