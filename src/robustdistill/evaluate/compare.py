"""Comparing students over seeds and test images: mean ± std, paired bootstrap intervals.

A record of the method table keeps, per attack, which test images the student got right
(`per_sample[attack]`, a string of 0/1 in the order of the fixed evaluation subset), so two
methods are compared on the same images: for each image the correctness is averaged over the
seeds of each method, `d_i = a_i - b_i`, and the interval is the percentile bootstrap of
`mean(d)` over resampled images (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from robustdistill.errors import ConfigError


def encode_correct(correct: torch.Tensor | np.ndarray | Sequence[bool]) -> str:
    """Per-image correctness as a compact string of '0' and '1'."""
    return "".join("1" if bool(c) else "0" for c in np.asarray(correct).reshape(-1))


def decode_correct(text: str) -> np.ndarray:
    """The inverse of `encode_correct`: a float array of 0.0 / 1.0."""
    if set(text) - {"0", "1"}:
        raise ConfigError("per-sample correctness must be a string of 0 and 1")
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.float64) - ord("0")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; NaN for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ConfigError("mean_std needs at least one value")
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, resamples: int = 10000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """`(mean difference, low, high)` of accuracy a - b with a percentile-bootstrap interval.

    `a` and `b` are per-image correctness, `(N,)` or `(seeds, N)` (averaged over seeds first), on
    the same N images in the same order.
    """
    a_img = np.atleast_2d(np.asarray(a, dtype=np.float64)).mean(axis=0)
    b_img = np.atleast_2d(np.asarray(b, dtype=np.float64)).mean(axis=0)
    if a_img.shape != b_img.shape or a_img.size == 0:
        raise ConfigError(f"paired comparison needs the same non-empty image set, got {a_img.size} and {b_img.size}")
    if not 0 < level < 1:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    diff = a_img - b_img
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # chunks keep memory at 1000 x N
        stop = min(resamples, start + 1000)
        picks = rng.integers(0, diff.size, size=(stop - start, diff.size))
        means[start:stop] = diff[picks].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(diff.mean()), float(low), float(high)
