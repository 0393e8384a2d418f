"""Threat models: the L-inf and L2 balls around a clean input, intersected with the image box [0, 1].

A threat model knows three things an iterative attack needs:

- `project(x_adv, x, eps)`: the closest point of the ball around `x`, then clamped to `[0, 1]`
  (clamping after the projection never leaves the ball: it only moves coordinates toward `x`);
- `random_start(x, eps, generator=None)`: a random point of the ball (L-inf: uniform in the cube,
  L2: uniform in the ball), clamped to `[0, 1]`;
- `step(x_adv, grad, step_size)`: one steepest-ascent step for the norm (L-inf: the sign of the
  gradient; L2: the gradient divided by its per-sample L2 norm, zero where the gradient is zero).

`eps` and `step_size` are floats or per-sample tensors of shape `(B,)` (used by eps sweeps).
Nothing here synchronises with the host, so the functions are safe inside attack loops.

Example::

    >>> threat = get_threat("linf")
    >>> x = torch.rand(4, 1, 8, 8)
    >>> u = threat.random_start(x, 0.1)
    >>> bool((threat.distance(u, x) <= 0.1 + 1e-6).all())
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch
from torch import Tensor

from robustdistill.attacks.randomness import batch_noise
from robustdistill.errors import ConfigError

NormName = Literal["linf", "l2"]

#: spellings accepted for each norm (case-insensitive)
_NORM_ALIASES: dict[str, NormName] = {
    "linf": "linf",
    "l-inf": "linf",
    "inf": "linf",
    "l_inf": "linf",
    "l2": "l2",
    "l-2": "l2",
    "2": "l2",
}

#: guards the L2 step against a zero gradient (a gradient below it is treated as no direction)
_L2_GRAD_FLOOR = 1e-12


def normalize_norm(norm: str) -> NormName:
    """The canonical name ("linf" or "l2") of a norm spelled "Linf", "linf", "inf", "L2", ...."""
    key = str(norm).strip().lower()
    if key not in _NORM_ALIASES:
        raise ConfigError(f"unknown norm '{norm}': use 'linf' or 'l2'")
    return _NORM_ALIASES[key]


def per_sample(value: float | Tensor, like: Tensor) -> float | Tensor:
    """A float unchanged, or a `(B,)` tensor reshaped to `(B, 1, ..., 1)` to broadcast against `like`."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return value.to(device=like.device, dtype=like.dtype)
        if value.dim() != 1 or value.shape[0] != like.shape[0]:
            raise ConfigError(
                f"a per-sample eps or step size must have shape ({like.shape[0]},) to match the batch; "
                f"got {tuple(value.shape)}"
            )
        return value.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))
    return float(value)


def _flat_norm(t: Tensor) -> Tensor:
    """Per-sample L2 norm, shape (B, 1, ..., 1)."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


class ThreatModel(ABC):
    """A norm ball around the clean input, intersected with [0, 1]; stateless (`LinfThreat`, `L2Threat`)."""

    name: ClassVar[NormName]

    @abstractmethod
    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        """`x_adv` moved into the eps-ball around `x` and into [0, 1]."""

    @abstractmethod
    def random_start(self, x: Tensor, eps: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A uniformly random point of the eps-ball around `x`, inside [0, 1]."""

    @abstractmethod
    def direction(self, grad: Tensor) -> Tensor:
        """The steepest-ascent direction of unit norm (for this norm) given a gradient."""

    def step(self, x_adv: Tensor, grad: Tensor, step_size: float | Tensor) -> Tensor:
        """`x_adv + step_size * direction(grad)`; not projected (call `project` after)."""
        return x_adv + per_sample(step_size, x_adv) * self.direction(grad)

    @abstractmethod
    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-sample distance in this norm, shape (B,)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinfThreat(ThreatModel):
    """The L-inf ball `{u : max_i |u_i - x_i| <= eps}` intersected with [0, 1]."""

    name: ClassVar[NormName] = "linf"

    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        e = per_sample(eps, x)
        if isinstance(e, Tensor):
            projected = torch.minimum(torch.maximum(x_adv, x - e), x + e)
        else:
            projected = x + (x_adv - x).clamp(-e, e)
        return projected.clamp(0.0, 1.0)

    def random_start(self, x: Tensor, eps: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
        noise = batch_noise("uniform", x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = (2.0 * noise - 1.0) * per_sample(eps, x)
        return (x + delta).clamp(0.0, 1.0)

    def direction(self, grad: Tensor) -> Tensor:
        return grad.sign()

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return (x_adv - x).flatten(1).abs().amax(dim=1)


class L2Threat(ThreatModel):
    """The L2 ball `{u : ||u - x||_2 <= eps}` (norm over all non-batch dimensions) intersected with [0, 1]."""

    name: ClassVar[NormName] = "l2"

    def project(self, x_adv: Tensor, x: Tensor, eps: float | Tensor) -> Tensor:
        delta = x_adv - x
        norm = _flat_norm(delta)
        factor = torch.clamp(per_sample(eps, x) / norm.clamp_min(1e-12), max=1.0)
        return (x + delta * factor).clamp(0.0, 1.0)

    def random_start(self, x: Tensor, eps: float | Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Uniform in the ball: Gaussian direction normalised, radius `eps * U^(1/d)`, `d` = features."""
        batch = x.shape[0]
        dim = x[0].numel()
        direction = batch_noise("normal", x.shape, generator=generator, device=x.device, dtype=x.dtype)
        direction = direction / _flat_norm(direction).clamp_min(1e-12)
        u = batch_noise("uniform", (batch,), generator=generator, device=x.device, dtype=x.dtype)
        radius = u.pow(1.0 / dim).view(-1, *([1] * (x.dim() - 1))) * per_sample(eps, x)
        return self.project(x + direction * radius, x, eps)

    def direction(self, grad: Tensor) -> Tensor:
        return grad / _flat_norm(grad).clamp_min(_L2_GRAD_FLOOR)

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        return (x_adv - x).flatten(1).norm(p=2, dim=1)


LINF = LinfThreat()
L2 = L2Threat()


def get_threat(norm: str | ThreatModel) -> ThreatModel:
    """The threat model for a norm name ("linf"/"Linf"/"inf" or "l2"/"L2"), or the object itself."""
    if isinstance(norm, ThreatModel):
        return norm
    return LINF if normalize_norm(norm) == "linf" else L2


def project(x_adv: Tensor, x: Tensor, eps: float | Tensor, norm: str = "linf") -> Tensor:
    """Project `x_adv` onto the `norm` ball of radius `eps` around `x`, then clamp to [0, 1]."""
    return get_threat(norm).project(x_adv, x, eps)


def random_start(
    x: Tensor, eps: float | Tensor, norm: str = "linf", generator: torch.Generator | None = None
) -> Tensor:
    """A uniformly random point of the `norm` ball of radius `eps` around `x`, clamped to [0, 1]."""
    return get_threat(norm).random_start(x, eps, generator=generator)


def step(x_adv: Tensor, grad: Tensor, step_size: float | Tensor, norm: str = "linf") -> Tensor:
    """One steepest-ascent step: sign (L-inf) or per-sample normalised gradient (L2); not projected."""
    return get_threat(norm).step(x_adv, grad, step_size)


def distance(x_adv: Tensor, x: Tensor, norm: str = "linf") -> Tensor:
    """Per-sample distance between `x_adv` and `x` in `norm`, shape (B,)."""
    return get_threat(norm).distance(x_adv, x)
