"""CW-inf: PGD on the Carlini & Wagner margin loss (the L-inf evaluation used by TRADES, RSLAD and others)."""

from __future__ import annotations

from torch import Tensor, nn

from robustdistill.attacks.losses import CWMargin
from robustdistill.attacks.pgd import PGD

__all__ = ["CW"]


class CW(PGD):
    """PGD on the margin loss of Carlini & Wagner ("Towards Evaluating the Robustness of Neural
    Networks", IEEE S&P 2017): maximise `min(max_{j != y} z_j - z_y, kappa)` over the threat ball.

    This is the fixed-budget "CW-inf" attack of robust-training papers (PGD with the CW loss), not
    C&W's original optimisation-based L2 attack.

    Arguments (keyword-only after `model`):
        model: any `nn.Module` mapping inputs in [0, 1] to logits.
        eps: radius (> 0), a float or a `(B,)` tensor.
        steps: iterations (default 30).
        step_size: default `eps / 4`.
        norm: "linf" or "l2".
        kappa: confidence cap of the margin (default 0: a sample stops moving once misclassified);
            None for the uncapped margin.
        random_start, restarts, targeted, record_path, seed: as in `PGD`.

    Shapes: `x` `(B, ...)` in [0, 1], `y` `(B,)` int64 -> `x_adv` like `x`.

    Example::

        >>> x_adv = CW(model, eps=8 / 255)(x, y)       # CW-30, step eps/4
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float | Tensor,
        steps: int = 30,
        step_size: float | Tensor | None = None,
        norm: str = "linf",
        kappa: float | None = 0.0,
        random_start: bool | str = True,
        restarts: int = 1,
        targeted: bool = False,
        record_path: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            model,
            eps=eps,
            step_size=step_size,
            steps=steps,
            norm=norm,
            random_start=random_start,
            restarts=restarts,
            loss=CWMargin(kappa=kappa),
            targeted=targeted,
            record_path=record_path,
            seed=seed,
        )
