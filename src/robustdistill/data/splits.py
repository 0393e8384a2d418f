"""Deterministic stratified train/test splits for datasets that ship as one pool."""

from __future__ import annotations

import numpy as np


def duplicate_groups(images: np.ndarray) -> np.ndarray:
    """For each sample, the index of the first sample with byte-identical pixels."""
    first: dict[bytes, int] = {}
    return np.asarray([first.setdefault(image.tobytes(), i) for i, image in enumerate(images)], dtype=np.int64)


def stratified_split(
    labels: np.ndarray,
    split: str,
    test_fraction: float = 0.2,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Sorted indices of `split` ("train" or "test").

    Within each class, the units (samples, or the `groups` of identical samples, which then always
    land in the same split) are permuted with `numpy.random.RandomState(seed)`, a generator whose
    stream NumPy keeps stable across versions, and the last `round(test_fraction * units)` go to test.
    """
    labels = np.asarray(labels)
    groups = np.arange(labels.size) if groups is None else np.asarray(groups)
    rng = np.random.RandomState(seed)
    in_test = np.zeros(labels.size, dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        units = np.unique(groups[members])
        units = units[rng.permutation(units.size)]
        test_units = units[units.size - round(test_fraction * units.size) :]
        in_test[members[np.isin(groups[members], test_units)]] = True
    return np.flatnonzero(in_test if split == "test" else ~in_test)
