"""AutoAttack (Croce & Hein 2020) through its reference implementation, the `pyautoattack` package.

Nothing of AutoAttack is re-implemented here: this adapter only chooses the attacks, adapts the
number of target classes to the model, keeps the model's mode and flags, keeps the caller's random
state (the reference code reseeds torch's global generator), and keeps its log quiet. With a
`progress` callback it runs the reference's attacks one at a time (each on the samples every earlier
one left robust, as the reference's own loop does) and reports the model's forward passes of each
against the number that attack makes when it runs to the end.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.attacks.pgd import _prepare_input, attack_mode
from robustdistill.attacks.threat import normalize_norm
from robustdistill.errors import ConfigError

__all__ = ["AUTOATTACK_ATTACKS", "AutoAttack", "ProgressCallback", "forward_passes"]

#: `progress(attack, done, total)`: `done` of about `total` forward passes of the reference attack `attack`
ProgressCallback = Callable[[str, int, int], None]

#: the attacks of the reference implementation that `version="custom"` may combine
AUTOATTACK_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab")
_VERSIONS = ("standard", "plus", "custom")
_PYAUTOATTACK_NORM = {"linf": "Linf", "l2": "L2"}
#: the reference implementation's default number of target classes for APGD-T and FAB-T
_MAX_TARGET_CLASSES = 9


class _ToWarnings(logging.Handler):
    """Turns the reference implementation's log warnings (its sanity checks) into Python warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        warnings.warn(f"AutoAttack: {record.getMessage()}", RuntimeWarning, stacklevel=2)


@contextmanager
def _routed_log(logger: logging.Logger, verbose: bool) -> Iterator[None]:
    """Verbose: the reference log on stderr. Quiet: only its warnings, as Python warnings."""
    saved = (logger.level, logger.propagate, list(logger.handlers))
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.DEBUG)
        logger.setLevel(logging.DEBUG)
    else:
        handler = _ToWarnings(level=logging.WARNING)
        logger.setLevel(logging.WARNING)
    logger.handlers = [handler]
    logger.propagate = False
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers = saved[2]


def forward_passes(adversary: Any, attack: str, batches: int) -> int:
    """Forward passes the reference `attack` makes on `batches` batches when it runs to the end.

    Counted on pyautoattack's code: per batch, APGD makes `restarts * (iterations + 1)`, APGD-T
    `targets * restarts * (iterations + 2)`, FAB `restarts * (2 * iterations + 2)`, FAB-T
    `targets * restarts * (2 * iterations + 3)` and Square `restarts * (queries + 2)`, plus 2 around
    each (its first prediction and the evaluation loop's check). An attack stops early once no sample
    is left to fool, so this is an upper bound.
    """
    apgd, targeted, fab, square = adversary.apgd, adversary.apgd_targeted, adversary.fab, adversary.square
    per_batch = {
        "apgd-ce": apgd.n_restarts * (apgd.n_iter + 1),
        "apgd-dlr": apgd.n_restarts * (apgd.n_iter + 1),
        "apgd-t": targeted.n_target_classes * targeted.n_restarts * (targeted.n_iter + 2),
        "fab": fab.n_restarts * (2 * fab.n_iter + 2),
        "fab-t": fab.n_target_classes * (2 * fab.n_iter + 3),  # the reference runs FAB-T with 1 restart
        "square": square.n_restarts * (square.n_queries + 2),
    }[attack]
    return batches * (per_batch + 2)


class AutoAttack:
    """AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", ICML 2020), run by the reference implementation `pyautoattack`.

    Arguments (keyword-only after `model`):
        model: any `nn.Module` mapping inputs in [0, 1] to logits.
        eps: radius (> 0).
        norm: "Linf" / "linf" or "L2" / "l2".
        version: "standard" (APGD-CE, APGD-T, FAB-T, Square: the RobustBench protocol), "plus", or
            "custom" with `attacks`.
        attacks: for "custom", a non-empty subset of "apgd-ce", "apgd-t", "fab-t", "square",
            "apgd-dlr", "fab" (run in the order given, each on the samples still robust).
        seed: seed of the reference implementation (default 0); the caller's random state is kept.
        batch_size: samples per forward pass inside AutoAttack.
        verbose: print the reference implementation's log (otherwise only its sanity-check warnings
            surface, as Python `RuntimeWarning`s).
        progress: optional `progress(attack, done, total)` callback, called as each reference attack
            starts (`done` 0), after every forward pass of the model, and when it ends (`done == total`);
            `total` is `forward_passes(...)` for the samples still robust when that attack starts.

    APGD-T and FAB-T target the `min(9, C - 1)` most likely wrong classes; the targeted DLR loss
    needs at least 4 classes, so with fewer the standard version skips APGD-T (with a warning) and
    a custom version that asks for it is refused.

    Shapes: `x` `(B, ...)` in [0, 1], `y` `(B,)` int64 -> `x_adv` like `x` (samples the model already
    misclassifies, or that resist every attack, are returned unchanged).

    Example::

        >>> x_adv = AutoAttack(model, eps=8 / 255)(x, y)
        >>> x_adv = AutoAttack(model, eps=8 / 255, version="custom", attacks=["apgd-ce"])(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        norm: str = "Linf",
        version: str = "standard",
        attacks: Sequence[str] | None = None,
        seed: int | None = 0,
        batch_size: int = 256,
        verbose: bool = False,
        progress: ProgressCallback | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"the attacked model must be an nn.Module, got {type(model).__name__}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < float(eps) < float("inf"):
            raise ConfigError(f"eps must be a number > 0, got {eps!r}")
        version = str(version).strip().lower()
        if version not in _VERSIONS:
            raise ConfigError(f"unknown AutoAttack version '{version}': use one of {', '.join(_VERSIONS)}")
        if version == "custom":
            if attacks is None or isinstance(attacks, str) or len(attacks) == 0:
                raise ConfigError("AutoAttack version='custom' needs attacks=[...], e.g. ['apgd-ce', 'apgd-t']")
            names = [str(a).strip().lower() for a in attacks]
            unknown = [a for a in names if a not in AUTOATTACK_ATTACKS]
            if unknown:
                raise ConfigError(
                    f"unknown AutoAttack attack(s) {', '.join(unknown)}: use {', '.join(AUTOATTACK_ATTACKS)}"
                )
            if len(set(names)) != len(names):
                raise ConfigError("AutoAttack attacks contain a duplicate")
            self.attacks: list[str] | None = names
        else:
            if attacks is not None:
                raise ConfigError(f"attacks=... only applies to version='custom', not '{version}'")
            self.attacks = None
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an integer or None, got {seed!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model = model
        self.eps = float(eps)
        self.norm = normalize_norm(norm)
        self.version = version
        self.seed = seed
        self.batch_size = batch_size
        self.verbose = bool(verbose)
        if progress is not None and not callable(progress):
            raise ConfigError(f"progress must be a callable (attack, done, total), got {type(progress).__name__}")
        self.progress = progress

    def _plan(self, num_classes: int) -> list[str]:
        """The attacks to run for a model with `num_classes` outputs."""
        if num_classes < 2:
            raise ConfigError(f"AutoAttack needs a classifier with at least 2 classes, the model has {num_classes}")
        if self.attacks is not None:
            if "apgd-t" in self.attacks and num_classes < 4:
                raise ConfigError(
                    f"apgd-t needs at least 4 classes (the targeted DLR loss); the model has {num_classes}"
                )
            if "apgd-dlr" in self.attacks and num_classes < 3:
                raise ConfigError(f"apgd-dlr needs at least 3 classes (the DLR loss); the model has {num_classes}")
            return list(self.attacks)
        if self.version == "standard":
            plan = ["apgd-ce", "apgd-t", "fab-t", "square"]
        else:
            plan = ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"]
        if num_classes < 4:
            warnings.warn(
                f"AutoAttack: with {num_classes} classes the targeted DLR loss is undefined; skipping APGD-T",
                RuntimeWarning,
                stacklevel=3,
            )
            plan.remove("apgd-t")
            if num_classes < 3 and "apgd-dlr" in plan:
                plan.remove("apgd-dlr")
        return plan

    def _build(self, pyautoattack: Any, num_classes: int, device: torch.device) -> Any:
        plan = self._plan(num_classes)
        adversary = pyautoattack.AutoAttack(
            self.model,
            norm=_PYAUTOATTACK_NORM[self.norm],
            eps=self.eps,
            version=self.version,
            attacks=self.attacks,
            seed=self.seed,
            device=device,
        )
        adversary.verbose = self.verbose
        adversary.attacks_to_run = plan
        targets = min(_MAX_TARGET_CLASSES, num_classes - 1)
        adversary.apgd_targeted.n_target_classes = targets
        adversary.fab.n_target_classes = targets
        return adversary

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for `(x, y)` found by the reference AutoAttack."""
        try:
            import pyautoattack
        except ImportError as error:  # pragma: no cover - a declared dependency
            raise ConfigError("AutoAttack needs the package 'pyautoattack': pip install pyautoattack") from error
        x32 = _prepare_input(x, y, "y")
        if x32.shape[0] == 0:
            return x.detach().clone()
        device = x32.device
        rng_devices = [device] if device.type == "cuda" else []
        old_trace = sys.gettrace()
        logger = logging.getLogger("auto-attack")
        try:
            with (
                attack_mode(self.model),
                torch.random.fork_rng(devices=rng_devices),
                _routed_log(logger, self.verbose),
            ):
                with torch.no_grad():
                    num_classes = int(self.model(x32[:1]).shape[1])
                adversary = self._build(pyautoattack, num_classes, device)
                if self.progress is None:
                    x_adv, _ = adversary.run_standard_evaluation(x32, y, batch_size=self.batch_size)
                else:
                    x_adv = self._one_by_one(pyautoattack, adversary, x32, y, self.progress)
        finally:
            # the reference implementation's dynamic-defence check calls sys.settrace(None)
            sys.settrace(old_trace)
        return x_adv.detach().to(x.dtype)

    def _one_by_one(self, pyautoattack: Any, adversary: Any, x: Tensor, y: Tensor, report: ProgressCallback) -> Tensor:
        """The reference's attacks in turn, each on the samples still robust, counting forward passes."""
        plan = list(adversary.attacks_to_run)
        with torch.no_grad():
            robust = torch.cat(
                [self.model(xb).argmax(1) == yb for xb, yb in zip(x.split(256), y.split(256), strict=True)]
            )
        accuracy = {"clean": float(robust.float().mean())}
        x_adv = x.clone()
        passes = [0]
        current: list[Any] = [None, 0]

        def count(*_: Any) -> None:
            passes[0] += 1
            if current[0] is not None and passes[0] < current[1]:
                report(current[0], passes[0], current[1])

        hook = self.model.register_forward_hook(count)
        try:
            for attack in plan:
                index = robust.nonzero().flatten()
                if index.numel() == 0:
                    break
                total = forward_passes(adversary, attack, math.ceil(index.numel() / self.batch_size))
                passes[0], current[:] = 0, [attack, total]
                report(attack, 0, total)
                adversary.attacks_to_run = [attack]
                found, predicted = adversary.run_standard_evaluation(x[index], y[index], batch_size=self.batch_size)
                fooled = predicted != y[index]
                x_adv[index[fooled]] = found[fooled]
                robust[index[fooled]] = False
                accuracy[attack] = float(robust.float().mean())
                current[0] = None
                report(attack, total, total)
        finally:
            hook.remove()
            adversary.attacks_to_run = plan
        pyautoattack.checks.check_square_sr(accuracy, logger=adversary.logger)
        return x_adv

    def __repr__(self) -> str:
        attacks = f", attacks={self.attacks}" if self.attacks is not None else ""
        return (
            f"AutoAttack(eps={self.eps:.6g}, norm='{self.norm}', version='{self.version}'{attacks}, "
            f"seed={self.seed}, batch_size={self.batch_size})"
        )
