"""Which points of a `paths` path are aligned, and how each is weighted.

aligned steps: 1-based indices k into the path (z_1 .. z_K), "all" by default
w_{i,k} = softmax_k(l_{i,k} / gamma) · p_T(y_i | z_{i,k})^rho, renormalised over k      (adaptive)
"""

from __future__ import annotations

import operator
import re
from typing import Any

import torch
from torch import Tensor

from robustdistill.errors import ConfigError

__all__ = ["WEIGHTINGS", "parse_aligned_steps", "path_weights"]

WEIGHTINGS = ("adaptive", "uniform", "last")


def parse_aligned_steps(value: Any, steps: int) -> tuple[int, ...]:
    """The aligned steps as 1-based indices into the path `(z_1 .. z_K)`: step k is the iterate after k steps.

    Accepts "all", a list of integers, one integer, or a string such as "2,4,6" (commas or spaces,
    optional brackets). Indices must lie in 1..K, be unique and be given in increasing order.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return tuple(range(1, steps + 1))
        items = [item for item in re.split(r"[,\s]+", text.strip("[]() ")) if item]
        try:
            numbers = [int(item) for item in items]
        except ValueError:
            raise ConfigError(
                f"option 'aligned_steps' must be 'all' or step indices such as '2,4,6'; got {value!r}"
            ) from None
    elif isinstance(value, (list, tuple)):
        numbers = []
        for item in value:
            try:
                if isinstance(item, bool):
                    raise TypeError
                numbers.append(operator.index(item))
            except TypeError:
                raise ConfigError(f"option 'aligned_steps' must hold integers, got {item!r} in {value!r}") from None
    elif not isinstance(value, bool) and isinstance(value, int):
        numbers = [int(value)]
    else:
        raise ConfigError(f"option 'aligned_steps' must be 'all' or a list of step indices, got {value!r}")
    if not numbers:
        raise ConfigError("option 'aligned_steps' is empty: give 'all' or at least one step index")
    for k in numbers:
        if not 1 <= k <= steps:
            raise ConfigError(
                f"option 'aligned_steps' holds 1-based step indices in 1..{steps} (steps={steps}); got {k}"
            )
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"option 'aligned_steps' repeats a step index: {numbers}")
    if numbers != sorted(numbers):
        raise ConfigError(f"option 'aligned_steps' must be in increasing order, e.g. {sorted(numbers)}; got {numbers}")
    return tuple(numbers)


def path_weights(kl: Tensor, log_reliability: Tensor, *, weighting: str, gamma: float, rho: float) -> Tensor:
    """Detached weights over the aligned steps (dim 0) for each column (one sample of one branch).

    `kl` and `log_reliability` (`log p_T(y | z)`) have shape (m, n). adaptive: `softmax_k(l / gamma) ·
    p_T(y|z)^rho` renormalised over k, computed as `softmax_k(l / gamma + rho · log p_T(y|z))`, the same
    value without underflow (a row of tiny reliabilities cannot become all-zero); a column that is
    not finite (non-finite teacher or student logits) falls back to uniform. uniform: 1/m.
    last: one-hot on the last row.
    """
    kl = kl.detach().float()
    steps = kl.shape[0]
    if weighting == "uniform":
        return torch.full_like(kl, 1.0 / steps)
    if weighting == "last":
        weights = torch.zeros_like(kl)
        weights[-1] = 1.0
        return weights
    scores = kl / gamma
    if rho != 0:
        scores = scores + rho * log_reliability.detach().float()
    weights = torch.softmax(scores, dim=0)
    finite = torch.isfinite(weights).all(dim=0, keepdim=True)
    return torch.where(finite, weights, torch.full_like(weights, 1.0 / steps))
