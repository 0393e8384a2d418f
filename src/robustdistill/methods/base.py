"""The method interface: a batch in, named loss terms out.

A method is an inner maximisation (built with `robustdistill.attacks`) plus an outer
objective. Methods are `nn.Module`s so that their own trainable parts (projection heads)
and state (memory banks, adaptive weights) travel with the checkpoint; teachers are held
outside the module tree, frozen and in `eval()` mode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError

if TYPE_CHECKING:
    from robustdistill.attacks import PerturbationBank


def kl_div(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample `KL(p || q)` with `p = softmax(p_logits / T)`, `q = softmax(q_logits / T)`, shape (B,)."""
    log_p = F.log_softmax(p_logits.float() / temperature, dim=1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kl_batchmean(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """`KL(p || q)` summed over classes and averaged over the batch (the project's one reduction)."""
    return kl_div(p_logits, q_logits, temperature).mean()


def freeze(model: nn.Module) -> nn.Module:
    """Put a teacher in eval mode with no parameter gradients, for good."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct predictions, as a detached 0-dim tensor (no host sync)."""
    return (logits.detach().argmax(dim=1) == y).float().mean()


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"option '{name}' must be {bound}, got {value}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"option '{name}' must be one of {', '.join(choices)}; got '{value}'")
    return value


class Method(nn.Module, ABC):
    """Base class of every training objective.

    Subclasses implement `compute(student, x, y, index)` returning a dict whose `loss` entry is
    the scalar to minimise and whose other entries are detached scalars logged by name.
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    needs_natural_teacher: ClassVar[bool] = False
    #: distillation on soft labels needs the same classes in teacher and student
    same_label_space: ClassVar[bool] = True

    def __init__(self, *, teacher: nn.Module | None = None, natural_teacher: nn.Module | None = None) -> None:
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ConfigError(f"method '{self.name}' needs a teacher: pass --teacher PATH")
        if self.needs_natural_teacher and natural_teacher is None:
            raise ConfigError(f"method '{self.name}' needs a natural teacher: pass --natural-teacher PATH")
        # Stored in a tuple so the teachers are not sub-modules: not trained, not in state_dict.
        self._teachers: tuple[nn.Module | None, nn.Module | None] = (
            freeze(teacher) if teacher is not None else None,
            freeze(natural_teacher) if natural_teacher is not None else None,
        )
        self.epoch = 0

    @property
    def teacher(self) -> nn.Module:
        if self._teachers[0] is None:
            raise ConfigError(f"method '{self.name}' has no teacher")
        return self._teachers[0]

    @property
    def natural_teacher(self) -> nn.Module:
        if self._teachers[1] is None:
            raise ConfigError(f"method '{self.name}' has no natural teacher")
        return self._teachers[1]

    def teachers(self) -> list[nn.Module]:
        return [t for t in self._teachers if t is not None]

    def named_teachers(self) -> dict[str, nn.Module]:
        """The teachers present, by role: `teacher`, `natural_teacher`."""
        roles = ("teacher", "natural_teacher")
        return {role: t for role, t in zip(roles, self._teachers, strict=True) if t is not None}

    def to(self, *args: Any, **kwargs: Any) -> Method:  # teachers follow the method's device
        super().to(*args, **kwargs)
        for teacher in self.teachers():
            teacher.to(*args, **kwargs)
        return self

    def train(self, mode: bool = True) -> Method:  # teachers stay in eval mode whatever happens
        super().train(mode)
        for teacher in self.teachers():
            teacher.eval()
        return self

    @abstractmethod
    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        """Named loss terms for one batch; `loss` is the scalar the optimiser minimises."""

    def forward(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        return self.compute(student, x, y, index)

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the training loop before each epoch (0-based)."""
        self.epoch = epoch

    def diagnostics(self) -> dict[str, float]:
        """Per-epoch extras for the metrics log; the default has none."""
        return {}

    def options(self) -> dict[str, Any]:
        """The method's resolved options, saved into the run's config."""
        return {}

    def get_extra_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))


class AdversarialDistillation(Method):
    """A distillation whose objective is evaluated at one adversarial example per sample.

    `distill(student, x, y, index)` returns the loss terms together with the adversarial batch `x'` and the
    student's logits `S(x')` it used, so that an add-on (`igdm`) can build on the same `x'` without
    attacking or forwarding the student again; `compute` is its first element.
    """

    @abstractmethod
    def distill(
        self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """`(terms, x_adv, logits_adv)` for one batch; `terms["loss"]` is the scalar to minimise."""

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        return self.distill(student, x, y, index)[0]


class AttackSettings(nn.Module):
    """The inner maximisation's threat model and PGD schedule, shared by every method.

    Defaults follow METHODS.md: 10 steps of size eps/4 with a random start. With `reuse_steps > 0`
    each training sample's last perturbation is kept (`attacks.PerturbationBank`, `num_samples`
    slots keyed by dataset index) and the next attack on it starts there and runs `reuse_steps`
    steps; a batch holding a sample never attacked before runs the full `steps` (from the stored
    perturbation where there is one, from the random start elsewhere). A module, so that the bank is
    part of the method's `state_dict` and of the checkpoint.
    """

    def __init__(
        self,
        *,
        eps: float,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
    ) -> None:
        super().__init__()
        self.eps = check_positive("eps", eps)
        self.step_size = check_positive("step_size", step_size) if step_size is not None else self.eps / 4
        if int(steps) != steps or steps < 1:
            raise ConfigError(f"option 'steps' must be an integer >= 1, got {steps}")
        self.steps = int(steps)
        self.norm = check_choice("norm", norm, ("linf", "l2"))
        if isinstance(reuse_steps, bool) or not isinstance(reuse_steps, int) or not 0 <= reuse_steps <= self.steps:
            raise ConfigError(
                f"option 'reuse_steps' must be an integer in 0..steps ({self.steps}); 0 = no reuse, got {reuse_steps!r}"
            )
        self.reuse_steps = reuse_steps
        self.bank: PerturbationBank | None = None
        if reuse_steps:
            from robustdistill.attacks import PerturbationBank

            if num_samples is None:
                raise ConfigError(
                    "option 'reuse_steps' keeps one perturbation per training sample and needs 'num_samples' "
                    "(the training-set size; the distill and train-teacher commands pass it)"
                )
            self.bank = PerturbationBank(num_samples)

    def pgd(
        self, model: nn.Module, *, loss: Any = "ce", random_start: Any = True, steps: int | None = None, **kwargs: Any
    ) -> Any:
        """A PGD attack on `model` with these settings (see `robustdistill.attacks.PGD`); `steps` overrides K."""
        from robustdistill.attacks import PGD

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
        from robustdistill.attacks import get_threat

        start, every = self.bank.start(x, index, eps=self.eps, threat=get_threat(self.norm), random_start=random_start)
        steps = self.reuse_steps if every else self.steps
        x_adv = self.pgd(model, loss=loss, random_start=random_start, steps=steps)(x, y, start=start)
        self.bank.store(x, x_adv, index)
        return x_adv

    def as_dict(self) -> dict[str, Any]:
        reuse = {"reuse_steps": self.reuse_steps} if self.reuse_steps else {}
        return {"eps": self.eps, "step_size": self.step_size, "steps": self.steps, "norm": self.norm, **reuse}
