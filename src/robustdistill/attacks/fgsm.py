"""The fast gradient sign method (Goodfellow et al. 2015): one step of size eps from the clean input."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from robustdistill.attacks.losses import InnerLoss
from robustdistill.attacks.pgd import PGD

__all__ = ["FGSM"]


class FGSM(PGD):
    """FGSM (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015).

    `x_adv = clip_[0,1](x + eps * sign(grad_x L(x, y)))`: one step of size `eps` from `x`, no random
    start. With `norm="l2"` the step is `eps * g / ||g||_2` (the fast gradient method).

    Arguments (keyword-only after `model`):
        model: any `nn.Module` mapping inputs in [0, 1] to logits.
        eps: radius (> 0), a float or a `(B,)` tensor.
        norm: "linf" or "l2".
        loss: the inner loss ("ce" by default; see `robustdistill.attacks.losses`).
        targeted: step down the loss toward `target` (given at call time).

    Shapes: `x` `(B, ...)` in [0, 1], `y` `(B,)` int64 -> `x_adv` like `x`.

    Example::

        >>> x_adv = FGSM(model, eps=8 / 255)(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | Tensor,
        norm: str = "linf",
        loss: str | InnerLoss | Callable[[nn.Module, Tensor, Tensor], Tensor] = "ce",
        targeted: bool = False,
    ) -> None:
        super().__init__(
            model,
            eps=eps,
            step_size=eps,
            steps=1,
            norm=norm,
            random_start=False,
            restarts=1,
            loss=loss,
            targeted=targeted,
        )
