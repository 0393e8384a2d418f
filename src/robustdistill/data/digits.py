"""scikit-learn's bundled 8x8 handwritten digits, as uint8 images with a fixed train/test split; registration."""

from __future__ import annotations

import numpy as np

from robustdistill.data.registry import SPLITS, register_dataset
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


def _read(located: None, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_digits(split), None)


register_dataset(
    "digits",
    num_classes=10,
    shape=(1, 8, 8),
    mean=(0.3053,),
    std=(0.3759,),
    classes=tuple(str(d) for d in range(10)),
    default_eps=0.1,
    augment={"padding": 1, "flip": False},
    files={split: "nothing (bundled with scikit-learn)" for split in SPLITS},
    read=_read,
    sizes={"train": 1438, "test": 359},
    aliases=("sklearn-digits",),
)
