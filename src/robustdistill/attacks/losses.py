"""Inner losses: the per-sample objectives an attack maximises.

The protocol is one call, `loss(model, x_adv, labels) -> Tensor` of shape `(B,)`, a per-sample
objective that PGD **maximises** (summed over the batch before the input gradient is taken, so
every sample follows its own gradient). Any callable with that signature works; the classes below
add three optional hooks that PGD uses when present:

- `bind(model, x, labels) -> InnerLoss`: called once per attack with the clean batch, before the
  first step, to fix what depends on it (for example the clean soft labels of TRADES' KL);
- `targeted(model, x_adv, target) -> (B,)`: the objective to maximise in targeted mode
  (default `-loss(model, x_adv, target)`: the attack descends the loss toward the target);
- `extra_models`: other networks the loss runs (a teacher); PGD puts them in `eval()` and
  freezes their parameters for the attack exactly as it does the attacked model.

Built-ins: `CrossEntropy`, `CWMargin`, `KLToSoftLabels` (RSLAD: a fixed teacher distribution),
`KLToClean` (TRADES: the model's own clean distribution), `KLToModel` (AdaAD: a reference model at
the moving point), `FeatureLoss` (any function of `model.features(x_adv)`), `LogitsLoss` and
`FunctionLoss` (plain functions). Names accepted by `resolve_loss`: "ce", "cw", "kl".

`KL(p || q)` is `sum_c p_c (log p_c - log q_c)`, per sample (`kl_div`, the project's one KL). Losses are
computed in float32 whatever the autocast dtype of the model's logits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError

__all__ = [
    "CWMargin",
    "CrossEntropy",
    "FeatureLoss",
    "FunctionLoss",
    "InnerLoss",
    "KLToClean",
    "KLToModel",
    "KLToSoftLabels",
    "LogitsLoss",
    "available_losses",
    "kl_div",
    "resolve_loss",
]


def kl_div(p: Tensor, q_logits: Tensor, temperature: float = 1.0, *, probs: bool = False) -> Tensor:
    """Per-sample `KL(p || q)`, shape (B,), `q = softmax(q_logits / T)`: the project's one KL.

    `p` is `softmax(p / T)` of logits `p`, or with `probs=True` the probabilities `p` as given
    (`0 log 0 = 0`). The batch mean (summed over classes, averaged over samples) is `kl_div(...).mean()`.
    """
    if probs:
        log_q = F.log_softmax(q_logits.float() / temperature, dim=1)
        p = p.float()
        return (torch.special.xlogy(p, p) - p * log_q).sum(dim=1)
    log_p = F.log_softmax(p.float() / temperature, dim=1)
    log_q = F.log_softmax(q_logits.float() / temperature, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def _margin(logits: Tensor, labels: Tensor) -> Tensor:
    """`max_{j != y} z_j - z_y` per sample, shape (B,)."""
    z = logits.float()
    z_label = z.gather(1, labels.view(-1, 1)).squeeze(1)
    is_label = torch.zeros_like(z, dtype=torch.bool).scatter_(1, labels.view(-1, 1), True)
    others = z.masked_fill(is_label, float("-inf"))
    return others.amax(dim=1) - z_label


class InnerLoss(ABC):
    """Base class of the built-in inner losses (see the module docstring for the protocol)."""

    name: ClassVar[str] = ""

    @abstractmethod
    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        """Per-sample loss at `x_adv`, shape (B,), to be maximised."""

    def targeted(self, model: nn.Module, x_adv: Tensor, target: Tensor) -> Tensor:
        """Objective maximised in targeted mode: by default `-loss` toward the target."""
        return -self(model, x_adv, target)

    def bind(self, model: nn.Module, x: Tensor, labels: Tensor) -> InnerLoss:
        """The loss to use for this clean batch (most losses need nothing from it)."""
        return self

    def check(self, model: nn.Module) -> None:
        """Raise ConfigError if this loss cannot be used on `model` (called at attack construction)."""
        return None  # most losses work on any classifier

    @property
    def extra_models(self) -> tuple[nn.Module, ...]:
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CrossEntropy(InnerLoss):
    """`CE(model(x_adv), y)` per sample (Madry et al. 2018). Targeted: PGD descends CE toward `target`."""

    name: ClassVar[str] = "ce"

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(model(x_adv).float(), labels, reduction="none")


class CWMargin(InnerLoss):
    """Carlini & Wagner (2017) margin: `max_{j != y} z_j - z_y` per sample, on logits `z`.

    Args:
        kappa: confidence. The objective is capped at `kappa` (C&W's `max(z_y - max_j z_j, -kappa)`,
            negated), so an example already misclassified by a margin of `kappa` gets no more gradient
            and PGD leaves it where it is. `None` removes the cap (the plain margin).

    Targeted mode maximises `min(z_t - max_{j != t} z_j, kappa)`: the same cap on the target's side.
    """

    name: ClassVar[str] = "cw"

    def __init__(self, kappa: float | None = 0.0) -> None:
        if kappa is not None and not float(kappa) >= 0:
            raise ConfigError(f"CWMargin kappa must be >= 0 or None, got {kappa}")
        self.kappa = None if kappa is None else float(kappa)

    def _cap(self, value: Tensor) -> Tensor:
        return value if self.kappa is None else value.clamp(max=self.kappa)

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        return self._cap(_margin(model(x_adv), labels))

    def targeted(self, model: nn.Module, x_adv: Tensor, target: Tensor) -> Tensor:
        return self._cap(-_margin(model(x_adv), target))

    def __repr__(self) -> str:
        return f"CWMargin(kappa={self.kappa})"


class KLToSoftLabels(InnerLoss):
    """`KL(probs || softmax(model(x_adv) / T))` per sample, with `probs` fixed for the whole attack.

    RSLAD (Zi et al. 2021) uses the teacher's clean soft labels: `KLToSoftLabels(softmax(teacher(x)))`.
    The labels passed to the call are ignored (they only decide which examples count as fooled when
    restarts are compared).

    Args:
        probs: `(B, C)` probabilities, one row per sample of the attacked batch (detached here).
        temperature: softens the model's distribution (`probs` are used as given).
    """

    name: ClassVar[str] = "kl-soft-labels"

    def __init__(self, probs: Tensor, *, temperature: float = 1.0) -> None:
        if not isinstance(probs, Tensor) or probs.dim() != 2:
            raise ConfigError("KLToSoftLabels needs a (B, C) tensor of probabilities")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.probs = probs.detach()
        self.temperature = float(temperature)

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        logits = model(x_adv)
        if logits.shape != self.probs.shape:
            raise ConfigError(
                f"KLToSoftLabels holds probabilities of shape {tuple(self.probs.shape)} but the model gave "
                f"logits of shape {tuple(logits.shape)}: build it from the same batch that is attacked"
            )
        return kl_div(self.probs, logits, self.temperature, probs=True)

    def __repr__(self) -> str:
        return f"KLToSoftLabels(probs={tuple(self.probs.shape)}, temperature={self.temperature})"


class KLToClean(InnerLoss):
    """TRADES (Zhang et al. 2019): `KL(p_M(x) || p_M(x_adv))`, `p_M(x)` the attacked model's clean output.

    The clean distribution is computed once per attack (model in `eval()`, no gradient) by `bind`.
    This is the loss the name "kl" stands for.
    """

    name: ClassVar[str] = "kl"

    def __init__(self, *, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def bind(self, model: nn.Module, x: Tensor, labels: Tensor) -> InnerLoss:
        with torch.no_grad():
            probs = F.softmax(model(x).float() / self.temperature, dim=1)
        return KLToSoftLabels(probs, temperature=self.temperature)

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        raise ConfigError("KLToClean must be bound to the clean batch first: call loss.bind(model, x, y)")


class KLToModel(InnerLoss):
    """AdaAD (Huang et al. 2023): `KL(p_ref(x_adv; T) || p_model(x_adv; T))`, reference at the moving point.

    The reference (a teacher) runs in `eval()` with frozen parameters during the attack. By default
    the input gradient flows through both networks, as in the official AdaAD inner loop;
    `detach_reference=True` treats the reference's distribution as a constant at each step.

    Args:
        reference: the network whose distribution the attacked model is pushed away from.
        temperature: softmax temperature `T` applied to both.
        detach_reference: no input gradient through the reference.
    """

    name: ClassVar[str] = "kl-model"

    def __init__(self, reference: nn.Module, temperature: float = 1.0, *, detach_reference: bool = False) -> None:
        if not isinstance(reference, nn.Module):
            raise ConfigError("KLToModel needs the reference network (an nn.Module)")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.reference = reference
        self.temperature = float(temperature)
        self.detach_reference = bool(detach_reference)

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_reference):
            ref_logits = self.reference(x_adv)
        return kl_div(ref_logits, model(x_adv), self.temperature)

    @property
    def extra_models(self) -> tuple[nn.Module, ...]:
        return (self.reference,)

    def __repr__(self) -> str:
        return (
            f"KLToModel({type(self.reference).__name__}, temperature={self.temperature}, "
            f"detach_reference={self.detach_reference})"
        )


class FeatureLoss(InnerLoss):
    """`fn(model.features(x_adv), labels) -> (B,)`: an objective on penultimate features.

    The attacked model must have a `features(x) -> (B, D)` method (every `robustdistill` classifier
    does). `fn` may close over fixed tensors (for example a teacher's clean embeddings).
    """

    name: ClassVar[str] = "feature"

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        if not callable(fn):
            raise ConfigError("FeatureLoss needs a function fn(features, labels) -> (B,)")
        self.fn = fn

    def check(self, model: nn.Module) -> None:
        if not callable(getattr(model, "features", None)):
            raise ConfigError(f"FeatureLoss needs a model with a features(x) method; {type(model).__name__} has none")

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        self.check(model)
        return self.fn(model.features(x_adv), labels)  # type: ignore[operator]

    def __repr__(self) -> str:
        return f"FeatureLoss({getattr(self.fn, '__name__', type(self.fn).__name__)})"


class LogitsLoss(InnerLoss):
    """A loss from a plain function of the logits: `fn(logits, labels) -> (B,)`.

    Example::

        >>> loss = LogitsLoss(lambda z, y: -z.gather(1, y[:, None]).squeeze(1))  # push the true logit down
    """

    name: ClassVar[str] = "logits"

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]) -> None:
        if not callable(fn):
            raise ConfigError("LogitsLoss needs a function fn(logits, labels) -> (B,)")
        self.fn = fn

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        return self.fn(model(x_adv), labels)

    def __repr__(self) -> str:
        return f"LogitsLoss({getattr(self.fn, '__name__', type(self.fn).__name__)})"


class FunctionLoss(InnerLoss):
    """Wraps any callable `fn(model, x_adv, labels) -> (B,)` so that it has the optional hooks."""

    name: ClassVar[str] = "function"

    def __init__(self, fn: Callable[[nn.Module, Tensor, Tensor], Tensor]) -> None:
        if not callable(fn):
            raise ConfigError("FunctionLoss needs a function fn(model, x_adv, labels) -> (B,)")
        self.fn = fn

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        return self.fn(model, x_adv, labels)

    def __repr__(self) -> str:
        return f"FunctionLoss({getattr(self.fn, '__name__', type(self.fn).__name__)})"


_NAMED: dict[str, Callable[[], InnerLoss]] = {
    "ce": CrossEntropy,
    "cross-entropy": CrossEntropy,
    "xent": CrossEntropy,
    "cw": CWMargin,
    "cw-margin": CWMargin,
    "kl": KLToClean,
    "trades": KLToClean,
}


def available_losses() -> list[str]:
    """Names accepted wherever a loss can be given as a string."""
    return sorted(_NAMED)


def resolve_loss(loss: str | InnerLoss | Callable[..., Any]) -> InnerLoss:
    """An `InnerLoss` from a name ("ce", "cw", "kl"), an `InnerLoss` or a callable (model, x_adv, labels)."""
    if isinstance(loss, InnerLoss):
        return loss
    if isinstance(loss, str):
        key = loss.strip().lower()
        if key not in _NAMED:
            raise ConfigError(
                f"unknown inner loss '{loss}': use one of {', '.join(available_losses())} or pass an InnerLoss"
            )
        return _NAMED[key]()
    if callable(loss):
        return FunctionLoss(loss)
    raise ConfigError(f"an inner loss must be a name, an InnerLoss or a callable; got {type(loss).__name__}")
