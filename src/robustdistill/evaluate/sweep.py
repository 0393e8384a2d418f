"""Robust accuracy as a function of the attack radius: PGD at eps values from 0 to twice the training eps.

    >>> record = eps_sweep(model, test_data, eps=8 / 255, points=9, n=500)
    >>> record["eps"], record["accuracy"]        # eps 0 is clean accuracy

The same fixed class-balanced subset (`data.subset(data, n, seed)`) and the same random starts are
used at every eps, so two sweeps with the same settings are directly comparable. A curve that does
not fall as eps grows, or stays well above chance at large eps, is a sign of gradient masking
(see docs/reading-results.md).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from robustdistill.attacks import PGD
from robustdistill.data import ArrayDataset, Loader, subset
from robustdistill.errors import ConfigError
from robustdistill.evaluate.record import environment
from robustdistill.utils import resolve_device

__all__ = ["eps_grid", "eps_sweep"]


def eps_grid(eps: float, points: int = 9) -> list[float]:
    """`points` radii evenly spaced from 0 to `2 * eps` (both ends included)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
        raise ConfigError(f"eps must be a positive number, got {eps!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ConfigError(f"an eps sweep needs points >= 2 (0 and 2*eps at least), got {points!r}")
    return [float(v) for v in np.linspace(0.0, 2.0 * float(eps), points)]


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def eps_sweep(
    model: nn.Module,
    data: ArrayDataset,
    *,
    eps: float,
    points: int = 9,
    n: int = 500,
    steps: int = 20,
    batch_size: int = 256,
    seed: int = 0,
    norm: str = "linf",
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy under PGD-`steps` (step `eps_i / 4`, uniform random start) at `eps_grid(eps, points)`.

    Args:
        model: maps inputs in [0, 1] to logits; put in `eval()` for the sweep and restored after.
        data: the evaluation split; a fixed class-balanced subset of `n` samples is used.
        eps: the reference radius (usually the training eps); the grid goes from 0 to `2 * eps`.
        points: number of radii (>= 2); eps 0 is clean accuracy (no attack); with an odd number,
            `eps` itself is on the grid (the default 9: 0, eps/4, ..., 2*eps).
        n, steps, batch_size, seed: subset size, PGD steps, batch size, seed of subset and starts.
        norm: "linf" or "l2".

    Returns:
        A record: `eps` (list), `accuracy` (list of fractions, same length), `reference_eps`,
        `n_examples`, the attack settings, dataset, split, seed, seconds and software versions.
    """
    grid = eps_grid(eps, points)
    _check_positive_int("n", n)
    _check_positive_int("steps", steps)
    _check_positive_int("batch_size", batch_size)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    evaluated = subset(data, n, seed=seed)
    was_training = model.training
    model.eval().to(device)
    loader = Loader(evaluated, batch_size, shuffle=False, seed=seed, augment=None, device=str(device))
    attacks = [
        None if e == 0.0 else PGD(model, eps=e, step_size=e / 4, steps=steps, norm=norm, random_start=True, seed=seed)
        for e in grid
    ]
    correct = torch.zeros(len(grid), dtype=torch.long)
    from robustdistill.runtime.progress import Progress

    start = time.perf_counter()
    try:
        with Progress(enabled=progress, total=len(loader) * len(grid), description="eps sweep") as bar:
            done = seen = 0
            for x, y, _ in loader.iterate():
                for i, attack in enumerate(attacks):
                    x_eval = x if attack is None else attack(x, y)
                    with torch.no_grad():
                        correct[i] += int((model(x_eval).argmax(dim=1) == y).sum())
                    done += 1
                    seen += x.shape[0]
                    bar.update(done, rate=seen / max(time.perf_counter() - start, 1e-9))
    finally:
        model.train(was_training)
    total = len(evaluated)
    return {
        "kind": "eps_sweep",
        "eps": grid,
        "accuracy": [float(c) / total for c in correct.tolist()],
        "reference_eps": float(eps),
        "n_examples": total,
        "attack": {"attack": "PGD", "steps": steps, "step_size": "eps/4", "random_start": True, "norm": norm},
        "dataset": data.name,
        "split": data.split,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "environment": environment(),
    }
