"""Structural similarity of teacher and student representations.

- `linear_cka(X, Y)`: linear centred kernel alignment (Kornblith, Norouzi, Lee and Hinton,
  "Similarity of Neural Network Representations Revisited", ICML 2019). With column-centred
  `X` (n, p) and `Y` (n, q),

      CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

  in [0, 1]; 1 for `Y = c X Q` (any orthogonal `Q`, any `c != 0`), invariant to orthogonal
  transforms and isotropic scaling of either side, not to arbitrary invertible maps. Feature
  dimensions may differ (teacher 640-d, student 512-d).
- `correlation_distance(F_T, F_S)`: how differently two networks arrange the same `B` samples.
  `C = F_hat F_hat^T` is the `(B, B)` Gram matrix of the row-wise L2-normalised features (the
  cosine similarity of every pair of samples) and

      d(F_T, F_S) = ||C_T - C_S||_F / B

  which is 0 when the two networks see the same pairwise geometry and at most 2 (entries lie
  in [-1, 1]). Dividing by `B` makes it the root-mean-square entry difference, comparable
  across batch sizes. Above 2048 samples it is computed from `(d, d)` matrices instead, with
  `||T T^T - S S^T||_F^2 = ||T^T T||_F^2 + ||S^T S||_F^2 - 2 ||T^T S||_F^2`.
- `structure_report(teacher, student, x, x_adv)`: both measures on clean and adversarial inputs.

All computations run in float64 on the given tensors' device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError

__all__ = ["correlation_distance", "features_of", "linear_cka", "structure_report"]

#: above this many samples the (B, B) Gram matrices are not formed (the trace identity is used)
_DIRECT_MAX = 2048


def _check_pair(name_a: str, a: Tensor, name_b: str, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.dim() != 2 or b.dim() != 2:
        raise ConfigError(
            f"{name_a} and {name_b} must be (n, d) feature matrices, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] != b.shape[0]:
        raise ConfigError(f"{name_a} and {name_b} must describe the same samples: {a.shape[0]} vs {b.shape[0]} rows")
    if a.shape[0] < 2:
        raise ConfigError("structure measures need at least 2 samples")
    return a.detach().double(), b.detach().double()


def linear_cka(X: Tensor, Y: Tensor) -> float:
    """Linear CKA of two `(n, p)`, `(n, q)` representations of the same n samples (see module docstring)."""
    x, y = _check_pair("X", X, "Y", Y)
    x = x - x.mean(dim=0, keepdim=True)
    y = y - y.mean(dim=0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.t() @ x) ** 2
    norm_x = torch.linalg.matrix_norm(x.t() @ x)
    norm_y = torch.linalg.matrix_norm(y.t() @ y)
    denominator = norm_x * norm_y
    if float(denominator) == 0.0:
        raise ConfigError("linear_cka is undefined for a constant representation (all samples identical)")
    return float(cross / denominator)


def correlation_distance(F_T: Tensor, F_S: Tensor) -> float:
    """`||C_T - C_S||_F / B` with `C` the (B, B) cosine-similarity Gram matrix of each network's features."""
    t, s = _check_pair("F_T", F_T, "F_S", F_S)
    t, s = F.normalize(t, dim=1), F.normalize(s, dim=1)
    n = t.shape[0]
    if n <= _DIRECT_MAX:
        return float(torch.linalg.matrix_norm(t @ t.t() - s @ s.t()) / n)
    # ||T T^T - S S^T||_F^2 = ||T^T T||_F^2 + ||S^T S||_F^2 - 2 ||T^T S||_F^2, in (d, d) memory
    squared = (
        torch.linalg.matrix_norm(t.t() @ t) ** 2
        + torch.linalg.matrix_norm(s.t() @ s) ** 2
        - 2 * torch.linalg.matrix_norm(t.t() @ s) ** 2
    )
    return float(squared.clamp_min(0).sqrt() / n)


@torch.no_grad()
def features_of(model: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Penultimate features `(n, D)` of `model` in `eval()` mode, without autograd, as float32 on the CPU.

    Chunks of `x` are moved to the model's device, so teacher and student may live on different
    devices; the previous mode is restored.
    """
    was_training = model.training
    device = next(model.parameters()).device
    features = cast(Callable[[Tensor], Tensor], model.features)  # nn.Module.__getattr__ is typed Tensor | Module
    model.eval()
    try:
        return torch.cat([features(chunk.to(device)).float().cpu() for chunk in x.split(batch_size)])
    finally:
        model.train(was_training)


def structure_report(
    teacher: nn.Module, student: nn.Module, x: Tensor, x_adv: Tensor | None = None, *, batch_size: int = 256
) -> dict[str, Any]:
    """CKA and correlation distance between teacher and student features, clean and adversarial.

    Keys: `cka_clean`, `corr_dist_clean` (both networks on `x`); with `x_adv`: `cka_adv`,
    `corr_dist_adv` (both on `x_adv`) and `cka_anchor`, `corr_dist_anchor` (teacher on `x`,
    student on `x_adv`: what GACD matches); `n` the number of samples. `x_adv` is usually
    built against the student.
    """
    if x_adv is not None and x_adv.shape != x.shape:
        raise ConfigError(f"x_adv must have the shape of x {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    t_clean = features_of(teacher, x, batch_size)
    s_clean = features_of(student, x, batch_size)
    report: dict[str, Any] = {
        "n": int(x.shape[0]),
        "cka_clean": linear_cka(t_clean, s_clean),
        "corr_dist_clean": correlation_distance(t_clean, s_clean),
    }
    if x_adv is not None:
        t_adv = features_of(teacher, x_adv, batch_size)
        s_adv = features_of(student, x_adv, batch_size)
        report.update(
            {
                "cka_adv": linear_cka(t_adv, s_adv),
                "corr_dist_adv": correlation_distance(t_adv, s_adv),
                "cka_anchor": linear_cka(t_clean, s_adv),
                "corr_dist_anchor": correlation_distance(t_clean, s_adv),
            }
        )
    return report
