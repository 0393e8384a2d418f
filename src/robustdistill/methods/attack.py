"""A method's inner maximisation: its declared options and the module that runs it.

`PGDOptions` (eps, step_size, steps, norm) and `AttackOptions` (the same plus `reuse_steps`) are
the `attack` field of a method's options; `AttackSettings(options, num_samples=N)` is the module a
method holds as `self.attack`: `self.attack.perturb(student, x, y, index, loss=..., random_start=...)`
gives `x'`. Inside a run the four fields of `PGDOptions` are the run's `eps`, `step_size`, `steps`
and `norm` (`docs/attacks.md`, "One eps per run").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from torch import Tensor, nn

from robustdistill.attacks import PGD, PerturbationBank, get_threat
from robustdistill.config import MAX_ATTACK_STEPS
from robustdistill.errors import ConfigError
from robustdistill.methods.options import Options, option

__all__ = ["AttackOptions", "AttackSettings", "PGDOptions", "Schedule"]


@dataclass(frozen=True)
class PGDOptions(Options):
    """PGD's threat model and schedule (METHODS.md: 10 steps of eps/4)."""

    eps: float = option(8 / 255, gt=0, help="radius of the threat ball (the run's eps)")
    step_size: float | None = option(None, gt=0, help="step per iteration; none: eps / 4 (the run's step_size)")
    steps: int = option(10, ge=1, le=MAX_ATTACK_STEPS, help="PGD iterations (the run's steps)")
    norm: Literal["linf", "l2"] = option("linf", help="threat model (the run's norm)")

    #: the step when `step_size` is none, as a multiple of eps
    step_factor: ClassVar[float] = 0.25


@dataclass(frozen=True)
class AttackOptions(PGDOptions):
    """PGD, optionally warm-started from each sample's last perturbation (`docs/attacks.md`)."""

    reuse_steps: int = option(
        0, ge=0, help="steps from each sample's stored perturbation once every sample has one (0: no reuse)"
    )

    def check(self) -> None:
        if self.reuse_steps > self.steps:
            raise ConfigError(
                f"option 'reuse_steps' must be an integer in 0..steps ({self.steps}); 0 = no reuse, "
                f"got {self.reuse_steps}"
            )


class Schedule(Protocol):
    """What `AttackSettings` reads from a method's attack options (`PGDOptions`, `AttackOptions`, ...)."""

    step_factor: ClassVar[float]

    @property
    def eps(self) -> float: ...

    @property
    def step_size(self) -> float | None: ...

    @property
    def steps(self) -> int: ...

    @property
    def norm(self) -> str: ...


class AttackSettings(nn.Module):
    """The inner maximisation of a method: PGD with the given schedule, warm-started with `reuse_steps`.

    With `reuse_steps > 0` each training sample's last perturbation is kept (`attacks.PerturbationBank`,
    `num_samples` slots keyed by dataset index) and the next attack on it starts there and runs
    `reuse_steps` steps; a batch holding a sample never attacked before runs the full `steps` (from the
    stored perturbation where there is one, from the random start elsewhere). A module, so that the
    bank is part of the method's `state_dict` and of the checkpoint.
    """

    def __init__(self, options: Schedule, *, num_samples: int | None = None) -> None:
        super().__init__()
        self.eps = options.eps
        self.step_size = options.step_factor * self.eps if options.step_size is None else options.step_size
        self.steps = options.steps
        self.norm = options.norm
        self.reuse_steps: int = getattr(options, "reuse_steps", 0)
        self.bank: PerturbationBank | None = None
        if self.reuse_steps:
            if num_samples is None:
                raise ConfigError(
                    "option 'reuse_steps' keeps one perturbation per training sample and needs 'num_samples' "
                    "(the training-set size; the distill and train-teacher commands pass it)"
                )
            self.bank = PerturbationBank(num_samples)

    def pgd(
        self, model: nn.Module, *, loss: Any = "ce", random_start: Any = True, steps: int | None = None, **kwargs: Any
    ) -> PGD:
        """A PGD attack on `model` with these settings (see `robustdistill.attacks.PGD`); `steps` overrides K."""
        return PGD(
            model,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps if steps is None else steps,
            norm=self.norm,
            loss=loss,
            random_start=random_start,
            **kwargs,
        )

    def perturb(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        index: Tensor | None,
        *,
        loss: Any = "ce",
        random_start: Any = True,
    ) -> Tensor:
        """`x'` for the training batch `(x, y)` of dataset indices `index`: PGD, warm-started with `reuse_steps`."""
        if self.bank is None:
            return self.pgd(model, loss=loss, random_start=random_start)(x, y)
        if index is None:
            raise ConfigError("option 'reuse_steps' needs the dataset index of every sample of the batch")
        start, every = self.bank.start(x, index, eps=self.eps, threat=get_threat(self.norm), random_start=random_start)
        steps = self.reuse_steps if every else self.steps
        x_adv = self.pgd(model, loss=loss, random_start=random_start, steps=steps)(x, y, start=start)
        self.bank.store(x, x_adv, index)
        return x_adv

    def extra_repr(self) -> str:
        reuse = f", reuse_steps={self.reuse_steps}" if self.reuse_steps else ""
        return f"eps={self.eps:.6g}, step_size={self.step_size:.6g}, steps={self.steps}, norm={self.norm}{reuse}"
