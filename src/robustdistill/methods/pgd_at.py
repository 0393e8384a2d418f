"""PGD adversarial training (Madry et al., ICLR 2018).

x' = PGD on CE(M(x'), y) from a uniform random start
L  = CE(M(x'), y)

With `clean_fraction = f > 0` the first round(f B) images of each (shuffled) batch stay
clean and only the rest are attacked, L = CE over the mixed batch: the mixed batches of
Goodfellow et al. (ICLR 2015) and the `ae_frac` of Croce et al. (AISTATS 2019), whose
Fashion-MNIST PGD-AT anchor used f = 0.5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.methods.base import AttackSettings, Method, accuracy
from robustdistill.methods.registry import register_method


@register_method("pgd-at", aliases=("madry", "pgd"))
class PGDAT(Method):
    """Minimise the cross-entropy of the worst-case input found by PGD."""

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
        clean_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= float(clean_fraction) < 1.0:
            raise ConfigError(f"option 'clean_fraction' must be in [0, 1), got {clean_fraction}")
        self.clean_fraction = float(clean_fraction)
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        n_clean = round(self.clean_fraction * x.shape[0])
        x_adv = self.attack.perturb(student, x[n_clean:], y[n_clean:], index[n_clean:], loss="ce")
        logits = student(torch.cat([x[:n_clean], x_adv]))
        loss = F.cross_entropy(logits, y)
        logits_adv = logits[n_clean:]
        return {
            "loss": loss,
            "ce_adv": F.cross_entropy(logits_adv.detach(), y[n_clean:]),
            "acc_adv": accuracy(logits_adv, y[n_clean:]),
        }

    def options(self) -> dict[str, object]:
        return {**self.attack.as_dict(), "clean_fraction": self.clean_fraction}
