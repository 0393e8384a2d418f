"""Projected gradient descent (Madry et al. 2018): any inner loss, L-inf or L2, restarts, path recording.

One engine, one entry point: `PGD(...)` is the attack object (torchattacks style) with validated
keyword-only settings, `__call__(x, y, *, target=None, start=None)` and restarts that keep each
sample's worst case; every run goes through `_ascend`, the step loop, which records each iterate into
a `(K, B, ...)` path when asked (`record_path=True`). A per-sample objective can go opposite ways in
one batch through its loss (an untargeted branch ascending CE toward `y` next to a targeted branch
whose loss is `-CE` toward `t`, as `paths` does).

During an attack the attacked model (and any network an inner loss uses, such as a teacher) is in
`eval()` mode with `requires_grad=False` on its parameters; each sub-module's mode and each
parameter's flag are restored afterwards, also when the attack raises. Input gradients come from
`torch.autograd.grad`, so no `.grad` field is touched. The step loop never synchronises with the
host. Under a caller's `torch.autocast` the forward passes run in low precision while the iterate,
its gradient and the projection stay in float32. With `freeze=False` the model runs as it is (its
training mode, its parameters' graph kept), so that a loss may reuse the attack's forward passes.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from robustdistill.attacks.losses import InnerLoss, resolve_loss
from robustdistill.attacks.randomness import batch_noise
from robustdistill.attacks.threat import ThreatModel, get_threat, normalize_norm
from robustdistill.errors import ConfigError

__all__ = ["NORMAL_START_STD", "PGD", "StartKind", "attack_mode", "initial_point"]

StartKind = Literal["uniform", "normal", "none"]

#: standard deviation of the "normal" start `x + 0.001 * N(0, I)` (TRADES, RSLAD, AdaAD), independent of eps
NORMAL_START_STD = 1e-3

_START_ALIASES: dict[str, StartKind] = {
    "uniform": "uniform",
    "normal": "normal",
    "trades": "normal",
    "none": "none",
}


def resolve_start(random_start: bool | str | None) -> StartKind:
    """`True`/"uniform" (uniform in the ball), "normal"/"trades" (`x + 0.001 N(0, I)`), `False`/"none"."""
    if random_start is True:
        return "uniform"
    if random_start is False or random_start is None:
        return "none"
    if isinstance(random_start, str) and random_start.strip().lower() in _START_ALIASES:
        return _START_ALIASES[random_start.strip().lower()]
    raise ConfigError(f"random_start must be True, False, 'uniform', 'normal' or 'none'; got {random_start!r}")


@contextmanager
def attack_mode(*modules: nn.Module) -> Iterator[None]:
    """Put `modules` in `eval()` with frozen parameters; restore every sub-module's mode and flag on exit."""
    unique = list({id(m): m for m in modules}.values())
    modes = [(sub, sub.training) for m in unique for sub in m.modules()]
    flags = [(p, p.requires_grad) for m in unique for p in m.parameters()]
    try:
        for module in unique:
            module.eval()
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        yield
    finally:
        for sub, training in modes:
            sub.training = training
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


def _check_scalar_or_batch(name: str, value: float | Tensor) -> float | Tensor:
    """Validate eps / step size: positive and finite, a float or a tensor of per-sample values."""
    if isinstance(value, Tensor):
        if value.dim() > 1:
            raise ConfigError(f"{name} must be a float or a (B,) tensor, got shape {tuple(value.shape)}")
        value = value.detach().float()
        if not bool(torch.isfinite(value).all()) or not bool((value > 0).all()):
            raise ConfigError(f"{name} must be > 0 and finite for every sample")
        return value if value.dim() == 1 else float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and value < float("inf")):
        raise ConfigError(f"{name} must be > 0 and finite, got {value}")
    return value


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _any_greater(a: float | Tensor, b: float | Tensor) -> bool:
    return bool(torch.as_tensor(a).gt(torch.as_tensor(b)).any())


def initial_point(
    x: Tensor,
    eps: float | Tensor,
    *,
    norm: str | ThreatModel = "linf",
    random_start: bool | str | None = "uniform",
    generator: torch.Generator | None = None,
) -> Tensor:
    """The start of an attack: `x`, uniform in the ball, or `x + 0.001 N(0, I)`; in the ball and in [0, 1]."""
    threat = get_threat(norm)
    kind = resolve_start(random_start)
    if kind == "uniform":
        return threat.random_start(x, eps, generator=generator)
    if kind == "normal":
        noise = batch_noise("normal", x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return threat.project(x + NORMAL_START_STD * noise, x, eps)
    return x.clone()


def _check_objective(value: Tensor, batch: int) -> None:
    if not isinstance(value, Tensor) or value.shape != (batch,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ConfigError(f"an inner loss must return one value per sample, shape ({batch},); got {shape}")
    if not value.requires_grad:
        raise ConfigError("the inner loss does not depend on the input: it must be differentiable in x_adv")


def _ascend(
    objective: Callable[[Tensor], Tensor],
    x: Tensor,
    x_start: Tensor,
    *,
    eps: float | Tensor,
    step_size: float | Tensor,
    steps: int,
    threat: ThreatModel,
    path: Tensor | None = None,
    keep_graph: bool = False,
) -> Tensor:
    """`steps` projected ascent steps of `objective` (B,) from `x_start`; writes iterate k into `path[k]`.

    `keep_graph` keeps each forward's graph past the input gradient (for a loss that reuses the forward).
    """
    batch = x.shape[0]
    x_adv = x_start.detach()
    for k in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            value = objective(x_adv)
            _check_objective(value, batch)
            total = value.float().sum()
        (grad,) = torch.autograd.grad(total, x_adv, allow_unused=True, retain_graph=keep_graph)
        if grad is None:
            raise ConfigError("the inner loss does not depend on the input: it must be differentiable in x_adv")
        with torch.no_grad():
            x_adv = threat.project(threat.step(x_adv.detach(), grad.float(), step_size), x, eps)
            if path is not None:
                path[k].copy_(x_adv)
    return x_adv.detach()


def _prepare_input(x: Tensor, labels: Tensor, name: str = "labels") -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ConfigError("x must be a float tensor of shape (B, ...) with values in [0, 1]")
    if not isinstance(labels, Tensor) or labels.shape != (x.shape[0],) or labels.dtype != torch.long:
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ConfigError(f"{name} must be an int64 tensor of shape ({x.shape[0]},); got {got}")
    return x.detach().float()


class PGD:
    """Projected gradient descent (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
    Attacks", ICLR 2018), on any inner loss, in the L-inf or L2 ball, with restarts and path recording.

    Arguments (keyword-only after `model`):
        model: any `nn.Module` mapping inputs in [0, 1] to logits `(B, C)`.
        eps: radius of the threat ball (> 0), or a `(B,)` tensor of per-sample radii.
        step_size: step per iteration (> 0); default `eps / 4`. A step larger than `eps` with
            `steps > 1` warns (the pair is probably swapped).
        steps: number of iterations K (>= 1). Default 10 (the training default; evaluation uses 20).
        norm: "linf" (sign steps) or "l2" (normalised-gradient steps).
        random_start: True / "uniform" (uniform in the ball), "normal" (`x + 0.001 N(0, I)`, the
            TRADES / RSLAD start) or False (start at `x`).
        restarts: independent runs (>= 1; > 1 needs a random start). Each sample keeps the run that
            fools the model (untargeted: misclassified; targeted: predicted as the target), else the
            one with the highest objective: restarts never raise accuracy.
        loss: "ce", "cw", "kl" (TRADES' `KL(p(x) || p(x_adv))`), an `InnerLoss` or a callable
            `(model, x_adv, labels) -> (B,)`; the attack maximises it.
        targeted: minimise the loss toward a `target` given at call time (PGD maximises
            `loss.targeted(model, x_adv, target)`, by default `-loss`).
        record_path: return all iterates `(K, B, ...)` instead of the final example.
        freeze: put the model (and the loss's `extra_models`) in `eval()` with frozen parameters for the
            attack (default). False runs the model as it is, in its training mode, and keeps each
            forward's graph, so that the loss may keep its logits for the training loss (`paths`).
        seed: seeds a private generator for the random starts (created on the first call and
            advanced by each call); None uses torch's global generator.

    Shapes:
        `x`: `(B, ...)` float in [0, 1]; `y`, `target`: `(B,)` int64.
        Returns `x_adv` of the shape and dtype of `x`, or with `record_path=True` the iterates
        `(K, B, ...)` whose last entry is the returned example (for restarts, the kept run's path).

    Example::

        >>> attack = PGD(model, eps=8 / 255, step_size=2 / 255, steps=20)
        >>> x_adv = attack(x, y)
        >>> path = PGD(model, eps=8 / 255, steps=10, record_path=True)(x, y)   # (10, B, C, H, W)
        >>> x_t = PGD(model, eps=8 / 255, targeted=True)(x, y, target=t)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | Tensor,
        step_size: float | Tensor | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool | str = True,
        restarts: int = 1,
        loss: str | InnerLoss | Callable[[nn.Module, Tensor, Tensor], Tensor] = "ce",
        targeted: bool = False,
        record_path: bool = False,
        freeze: bool = True,
        seed: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"the attacked model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.eps = _check_scalar_or_batch("eps", eps)
        self.step_size = _check_scalar_or_batch("step_size", self.eps / 4 if step_size is None else step_size)
        self.steps = _check_int("steps", steps, 1)
        self.norm = normalize_norm(norm)
        self.threat = get_threat(self.norm)
        self.random_start = resolve_start(random_start)
        self.restarts = _check_int("restarts", restarts, 1)
        if self.restarts > 1 and self.random_start == "none":
            raise ConfigError("restarts > 1 need a random start: set random_start=True or restarts=1")
        self.loss = resolve_loss(loss)
        self.loss.check(model)
        self.targeted = bool(targeted)
        self.record_path = bool(record_path)
        self.freeze = bool(freeze)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}
        if self.steps > 1 and _any_greater(self.step_size, self.eps):
            warnings.warn(
                f"PGD step_size ({self._fmt(self.step_size)}) is larger than eps ({self._fmt(self.eps)}) "
                "with more than one step: are the two swapped?",
                UserWarning,
                stacklevel=2,
            )

    @staticmethod
    def _fmt(value: float | Tensor) -> str:
        if isinstance(value, Tensor):
            return f"tensor of {value.numel()}"
        return f"{value:.6g}"

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed)
            self._generators[device] = generator
        return self._generators[device]

    def __call__(self, x: Tensor, y: Tensor, *, target: Tensor | None = None, start: Tensor | None = None) -> Tensor:
        """Adversarial examples for `(x, y)` (see the class docstring); `start` replaces the first start."""
        x32 = _prepare_input(x, y, "y")
        if self.targeted:
            if target is None:
                raise ConfigError("a targeted PGD needs target=...: the class each sample is pushed toward")
            _prepare_input(x, target, "target")
            if bool((target == y).any()):
                raise ConfigError("a target equals the true label for some samples: choose targets t != y")
        elif target is not None:
            raise ConfigError("target was given to an untargeted PGD: construct it with targeted=True")
        if start is not None and start.shape != x32.shape:
            raise ConfigError(f"start must have the shape of x {tuple(x32.shape)}, got {tuple(start.shape)}")
        if isinstance(self.eps, Tensor) and self.eps.shape[0] != x32.shape[0]:
            raise ConfigError(f"per-sample eps has {self.eps.shape[0]} entries for a batch of {x32.shape[0]}")
        eps = self.eps.to(x32.device) if isinstance(self.eps, Tensor) else self.eps
        step_size = self.step_size.to(x32.device) if isinstance(self.step_size, Tensor) else self.step_size

        model = self.model
        generator = self._generator(x32.device)
        batch = x32.shape[0]
        view = (-1, *([1] * (x32.dim() - 1)))
        frozen = attack_mode(model, *self.loss.extra_models) if self.freeze else contextlib.nullcontext()
        with frozen:
            bound = self.loss.bind(model, x32, y)
            if self.targeted:
                goal: Tensor = target  # type: ignore[assignment]

                def objective(u: Tensor) -> Tensor:
                    return bound.targeted(model, u, goal)
            else:

                def objective(u: Tensor) -> Tensor:
                    return bound(model, u, y)

            best: Tensor | None = None
            best_path: Tensor | None = None
            best_fooled: Tensor | None = None
            best_value: Tensor | None = None
            for run in range(self.restarts):
                if run == 0 and start is not None:
                    x0 = self.threat.project(start.detach().float(), x32, eps)
                else:
                    x0 = initial_point(x32, eps, norm=self.threat, random_start=self.random_start, generator=generator)
                path = (
                    torch.empty((self.steps, *x32.shape), dtype=torch.float32, device=x32.device)
                    if self.record_path
                    else None
                )
                x_run = _ascend(
                    objective,
                    x32,
                    x0,
                    eps=eps,
                    step_size=step_size,
                    steps=self.steps,
                    threat=self.threat,
                    path=path,
                    keep_graph=not self.freeze,
                )
                if self.restarts == 1:
                    best, best_path = x_run, path
                    break
                with torch.no_grad():
                    prediction = model(x_run).argmax(dim=1)
                    fooled = prediction == target if self.targeted else prediction != y
                    value = objective(x_run).float()
                if best is None:
                    best, best_path, best_fooled, best_value = x_run, path, fooled, value
                    continue
                assert best_fooled is not None and best_value is not None
                better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (value > best_value))
                best = torch.where(better.view(view), x_run, best)
                if path is not None and best_path is not None:
                    best_path = torch.where(better.view(1, *view), path, best_path)
                best_fooled = best_fooled | fooled
                best_value = torch.where(better, value, best_value)
        assert best is not None and batch == best.shape[0]
        if self.record_path:
            assert best_path is not None
            return best_path.to(x.dtype)
        return best.to(x.dtype)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self._fmt(self.eps)}, step_size={self._fmt(self.step_size)}, "
            f"steps={self.steps}, norm='{self.norm}', random_start='{self.random_start}', "
            f"restarts={self.restarts}, loss={self.loss!r}, targeted={self.targeted}, "
            f"record_path={self.record_path}, freeze={self.freeze}, seed={self.seed})"
        )
