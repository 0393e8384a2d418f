"""A held-out validation split carved from the training split.

Hyper-parameters, checkpoints and per-epoch curves are chosen and drawn on it; the test split is
kept for the final numbers. The carve is class-balanced (`balanced_indices`) and depends only on
the labels, `size` and `seed`, so every seed of a comparison sees the same validation images.
"""

from __future__ import annotations

import torch

from robustdistill.data.dataset import ArrayDataset
from robustdistill.data.subset import balanced_indices
from robustdistill.errors import ConfigError

DEFAULT_FRACTION = 0.1
DEFAULT_CAP = 5000


def default_validation_size(train_size: int) -> int:
    """10 % of the training split, at most 5000 images (5000 of Fashion-MNIST's 60 000)."""
    return min(DEFAULT_CAP, int(DEFAULT_FRACTION * train_size))


def _take(dataset: ArrayDataset, keep: torch.Tensor, split: str) -> ArrayDataset:
    return ArrayDataset(
        images=dataset.images[keep],
        labels=dataset.labels[keep],
        num_classes=dataset.num_classes,
        name=dataset.name,
        split=split,
        mean=dataset.mean,
        std=dataset.std,
        classes=dataset.classes,
    )


def split_validation(train: ArrayDataset, size: int, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """`(rest, validation)`: `size` class-balanced images of `train` held out, the others kept in order.

    >>> train, val = split_validation(data.load("fashion-mnist", "train"), 5000)   # 55 000 + 5 000
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size < len(train):
        raise ConfigError(
            f"the validation split needs 1 <= size < {len(train)} (the training images), got {size!r}; "
            "use val_size=0 for no validation split."
        )
    held = torch.from_numpy(balanced_indices(train.labels.numpy(), size, seed))
    mask = torch.ones(len(train), dtype=torch.bool)
    mask[held] = False
    return _take(train, torch.nonzero(mask).flatten(), "train"), _take(train, held, "val")
