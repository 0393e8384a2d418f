"""scikit-learn's bundled 8x8 handwritten digits, as uint8 images with a fixed train/test split."""

from __future__ import annotations

import numpy as np

from robustdistill.data.splits import stratified_split


def read_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 1, 8, 8)` uint8 (values 0..16 scaled to 0..255) and labels 0..9.

    All 1797 samples are split per class: 20% test, chosen by `stratified_split(seed=0)`.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    keep = stratified_split(labels, split)
    return images[keep], labels[keep]
