"""Fixed, class-balanced subsets of an `ArrayDataset`."""

from __future__ import annotations

import numpy as np
import torch

from robustdistill.data.dataset import ArrayDataset
from robustdistill.errors import DataError


def balanced_indices(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `n` samples spread as evenly as possible over the classes present.

    Each class gets `n // C`; the `n % C` extra samples go to classes picked by a seeded
    permutation; a class with too few samples gives its share to the others, round-robin.
    Within a class, samples are picked by a seeded permutation. Pure function of (labels, n, seed).
    """
    n = min(int(n), int(labels.size))
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.full(classes.size, n // classes.size, dtype=np.int64)
    quota[rng.permutation(classes.size)[: n % classes.size]] += 1
    order = rng.permutation(classes.size)
    quota = np.minimum(quota, counts)
    missing = n - int(quota.sum())
    while missing > 0:  # round-robin the share of too-small classes over classes with room left
        for c in order:
            if missing and quota[c] < counts[c]:
                quota[c] += 1
                missing -= 1
    chosen = []
    for label, k in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == label)
        chosen.append(members[rng.permutation(members.size)[:k]])
    return np.sort(np.concatenate(chosen))


def subset(dataset: ArrayDataset, n: int, seed: int = 0) -> ArrayDataset:
    """A fixed class-balanced subset of `n` samples (the whole dataset when `n >= len(dataset)`).

    Samples keep their original order; the choice depends only on (labels, n, seed).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"a subset needs n >= 1 samples, got {n!r}.")
    if n >= len(dataset):
        return dataset
    keep = torch.from_numpy(balanced_indices(dataset.labels.numpy(), int(n), seed))
    return ArrayDataset(
        images=dataset.images[keep],
        labels=dataset.labels[keep],
        num_classes=dataset.num_classes,
        name=dataset.name,
        split=dataset.split,
        mean=dataset.mean,
        std=dataset.std,
        classes=dataset.classes,
    )
