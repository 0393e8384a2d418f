"""The method interface: a batch in, named loss terms out.

A method is an inner maximisation (built with `robustdistill.attacks`) plus an outer
objective. Methods are `nn.Module`s so that their own trainable parts (projection heads)
and state (memory banks, adaptive weights) travel with the checkpoint; teachers are held
outside the module tree, frozen and in `eval()` mode.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.methods.options import Options

OptionsT = TypeVar("OptionsT", bound=Options)

Role = Literal["objective", "distillation"]


@dataclass(frozen=True)
class RunFacts:
    """What a method may need to know about its run, filled in by `distill` and `train-teacher`.

    Facts, not options: they follow from the data and the models and are not saved with the options.
    """

    #: the training-set size N: one slot per sample in perturbation and memory banks
    num_samples: int | None = None
    #: the student's `feature_dim` (gacd's projection head)
    student_dim: int | None = None
    #: the student's model spec (peeraid builds its peer from it)
    student_spec: dict[str, Any] | None = None
    #: teacher and student share their classes (False: cross-task transfer)
    same_label_space: bool = True

    def __post_init__(self) -> None:
        for name in ("num_samples", "student_dim"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"'{name}' must be an integer >= 1 (or None), got {value!r}")
        if self.student_spec is not None and not isinstance(self.student_spec, dict):
            raise ConfigError(f"'student_spec' must be a model spec (a dict), got {self.student_spec!r}")
        if not isinstance(self.same_label_space, bool):
            raise ConfigError(f"'same_label_space' must be true or false, got {self.same_label_space!r}")


def freeze(model: nn.Module) -> nn.Module:
    """Put a teacher in eval mode with no parameter gradients, for good."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Fraction of correct predictions, as a detached 0-dim tensor (no host sync)."""
    return (logits.detach().argmax(dim=1) == y).float().mean()


class Method(nn.Module, ABC, Generic[OptionsT]):
    """Base class of every training objective; `Method[MyOptions]` declares its options type.

    Subclasses implement `compute(student, x, y, index)` returning a dict whose `loss` entry is
    the scalar to minimise and whose other entries are detached scalars logged by name. The class
    attributes below are set by `register_method` from the registration.
    """

    name: ClassVar[str] = ""
    role: ClassVar[Role] = "objective"
    needs_teacher: ClassVar[bool] = False
    needs_natural_teacher: ClassVar[bool] = False
    #: distillation on soft labels needs the same classes in teacher and student
    same_label_space: ClassVar[bool] = True

    def __init__(
        self,
        options: OptionsT | None = None,
        *,
        teacher: nn.Module | None = None,
        natural_teacher: nn.Module | None = None,
        facts: RunFacts = RunFacts(),
    ) -> None:
        super().__init__()
        # a method without options (as `Standard`) may be built as `Method()`: its options are the empty `Options`
        self.options: OptionsT = options if options is not None else cast(OptionsT, Options())
        self.facts = facts
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

    def get_extra_state(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))


class AdversarialDistillation(Method[OptionsT]):
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
