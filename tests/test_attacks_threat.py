"""Unit tests of the threat models and inner losses on fixed tensors (no trained model needed)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustdistill.attacks import (
    CrossEntropy,
    CWMargin,
    FeatureLoss,
    KLToClean,
    KLToModel,
    KLToSoftLabels,
    LogitsLoss,
    get_threat,
    project,
    random_start,
    resolve_loss,
    step,
)
from robustdistill.errors import ConfigError


class Identity(nn.Module):
    """The input (B, C) is the logit vector: losses can be checked against hand-computed values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _dist(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    d = (a - b).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


# ---------------------------------------------------------------- threat models


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    eps=st.floats(1e-3, 2.0),
    scale=st.floats(0.0, 5.0),
    norm=st.sampled_from(["linf", "l2"]),
)
def test_project_lands_in_ball_and_box_and_is_idempotent(seed: int, eps: float, scale: float, norm: str) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 1, 4, 4, generator=g)
    x_adv = x + scale * torch.randn(x.shape, generator=g)
    p = project(x_adv, x, eps, norm)
    assert (_dist(p, x, norm) <= eps + 1e-6).all()
    assert p.min() >= 0 and p.max() <= 1
    torch.testing.assert_close(project(p, x, eps, norm), p, atol=1e-6, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_project_keeps_points_already_inside(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 4, 4, generator=g) * 0.5 + 0.25
    inside = random_start(x, 0.1, norm, generator=g)
    torch.testing.assert_close(project(inside, x, 0.1, norm), inside)


def test_linf_projection_is_coordinatewise_clip() -> None:
    x = torch.tensor([[0.5, 0.05, 0.95, 0.5]])
    x_adv = torch.tensor([[0.9, -0.5, 1.5, 0.52]])
    expected = torch.tensor([[0.6, 0.0, 1.0, 0.52]])
    torch.testing.assert_close(project(x_adv, x, 0.1, "linf"), expected)


def test_l2_projection_rescales_the_perturbation() -> None:
    x = torch.full((1, 4), 0.5)
    x_adv = x + torch.tensor([[0.3, 0.4, 0.0, 0.0]])  # norm 0.5
    p = project(x_adv, x, 0.25, "l2")
    torch.testing.assert_close(p - x, torch.tensor([[0.15, 0.2, 0.0, 0.0]]))


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_fills_the_ball(norm: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.full((2000, 1, 2, 2), 0.5)
    eps = 0.2
    u = random_start(x, eps, norm, generator=g)
    dist = _dist(u, x, norm)
    assert (dist <= eps + 1e-6).all()
    if norm == "linf":
        # uniform in the cube: each coordinate uniform in [-eps, eps] (mean 0, variance eps^2 / 3)
        delta = (u - x).flatten()
        assert abs(delta.mean().item()) < 0.01
        assert abs(delta.var().item() - eps**2 / 3) < 0.002
    else:
        # uniform in the 4-dimensional ball: P(radius <= r) = (r / eps)^4, so the median radius is eps * 0.5^(1/4)
        median = dist.median().item()
        assert abs(median - eps * 0.5**0.25) < 0.01
        # directions are isotropic: mean perturbation near zero
        assert (u - x).flatten(1).mean(0).abs().max() < 0.02


def test_random_start_clamps_to_the_box() -> None:
    x = torch.tensor([[0.0, 1.0, 0.0, 1.0]]).repeat(50, 1)
    for norm in ("linf", "l2"):
        u = random_start(x, 0.5, norm, generator=torch.Generator().manual_seed(0))
        assert u.min() >= 0 and u.max() <= 1


def test_per_sample_eps() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 4, 4, generator=g)
    eps = torch.tensor([0.01, 0.1, 0.5])
    for norm in ("linf", "l2"):
        p = project(x + 3 * torch.randn(x.shape, generator=g), x, eps, norm)
        assert (_dist(p, x, norm) <= eps + 1e-6).all()
        u = random_start(x, eps, norm, generator=g)
        assert (_dist(u, x, norm) <= eps + 1e-6).all()
    with pytest.raises(ConfigError):
        project(x, x, torch.tensor([0.1, 0.2]), "linf")


def test_step_directions() -> None:
    grad = torch.tensor([[3.0, -4.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    x = torch.zeros(2, 4)
    torch.testing.assert_close(step(x, grad, 0.1, "linf"), torch.tensor([[0.1, -0.1, 0.0, 0.0], [0.0] * 4]))
    moved = step(x, grad, 0.5, "l2")
    torch.testing.assert_close(moved, torch.tensor([[0.3, -0.4, 0.0, 0.0], [0.0] * 4]))
    assert torch.isfinite(moved).all()  # the zero gradient does not divide by zero
    per_sample = step(x, grad, torch.tensor([1.0, 2.0]), "l2")
    torch.testing.assert_close(per_sample[0], torch.tensor([0.6, -0.8, 0.0, 0.0]))


def test_norm_names() -> None:
    assert get_threat("Linf").name == "linf"
    assert get_threat("inf").name == "linf"
    assert get_threat("L2").name == "l2"
    with pytest.raises(ConfigError):
        get_threat("l1")


# ---------------------------------------------------------------- inner losses


def test_cross_entropy_per_sample() -> None:
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([0, 1])
    value = CrossEntropy()(Identity(), z, y)
    expected = torch.tensor([-math.log(math.e**2 / (math.e**2 + 2)), -math.log(math.e / (1 + math.e + math.e**3))])
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(CrossEntropy().targeted(Identity(), z, y), -expected)


def test_cw_margin_values() -> None:
    z = torch.tensor([[1.0, 3.0, 2.0], [5.0, 1.0, 2.0]])
    y = torch.tensor([0, 0])
    # max_{j != y} z_j - z_y: [3 - 1, 2 - 5]
    torch.testing.assert_close(CWMargin(kappa=None)(Identity(), z, y), torch.tensor([2.0, -3.0]))
    torch.testing.assert_close(CWMargin()(Identity(), z, y), torch.tensor([0.0, -3.0]))  # capped at kappa = 0
    torch.testing.assert_close(CWMargin(kappa=1.5)(Identity(), z, y), torch.tensor([1.5, -3.0]))
    # targeted toward t = 2: z_t - max_{j != t} z_j = [2 - 3, 2 - 5], capped at kappa
    t = torch.tensor([2, 2])
    torch.testing.assert_close(CWMargin(kappa=None).targeted(Identity(), z, t), torch.tensor([-1.0, -3.0]))
    torch.testing.assert_close(CWMargin().targeted(Identity(), z, torch.tensor([1, 0])), torch.tensor([0.0, 0.0]))
    with pytest.raises(ConfigError):
        CWMargin(kappa=-1.0)


def test_kl_to_soft_labels_matches_hand_computation() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    z = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, -1.0]])
    q = F.softmax(z, dim=1)
    expected = []
    for i in range(2):
        expected.append(sum(p[i, c] * (math.log(p[i, c]) - math.log(q[i, c])) for c in range(3) if p[i, c] > 0))
    value = KLToSoftLabels(p)(Identity(), z, torch.tensor([0, 0]))
    torch.testing.assert_close(value, torch.tensor(expected, dtype=torch.float32))
    # row 0: KL((1/2, 1/2, 0) || uniform) = log(3/2)
    assert value[0].item() == pytest.approx(math.log(1.5), abs=1e-6)
    with pytest.raises(ConfigError):
        KLToSoftLabels(torch.ones(3))
    with pytest.raises(ConfigError):
        KLToSoftLabels(p)(Identity(), torch.zeros(3, 3), torch.zeros(3, dtype=torch.long))


def test_kl_to_clean_binds_the_clean_distribution() -> None:
    z = torch.tensor([[1.0, 0.0, -1.0]])
    bound = KLToClean().bind(Identity(), z, torch.tensor([0]))
    assert bound(Identity(), z, torch.tensor([0])).abs().item() < 1e-6
    assert bound(Identity(), z.flip(1), torch.tensor([0])).item() > 0.5
    assert isinstance(resolve_loss("kl"), KLToClean)
    with pytest.raises(ConfigError):
        KLToClean()(Identity(), z, torch.tensor([0]))


def test_kl_to_model_is_zero_for_the_model_itself_and_matches_formula() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x = torch.rand(7, 1, 4, 4)
    y = torch.zeros(7, dtype=torch.long)
    assert KLToModel(net)(net, x, y).abs().max().item() < 1e-6
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    value = KLToModel(other, temperature=2.0)(net, x, y)
    log_p = F.log_softmax(other(x) / 2, dim=1)
    log_q = F.log_softmax(net(x) / 2, dim=1)
    torch.testing.assert_close(value, (log_p.exp() * (log_p - log_q)).sum(1))
    assert (value > 0).all()


def test_kl_to_model_gradient_through_reference_is_optional() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    ref = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x = torch.rand(3, 1, 4, 4, requires_grad=True)
    y = torch.zeros(3, dtype=torch.long)
    (g_through,) = torch.autograd.grad(KLToModel(ref)(net, x, y).sum(), x)
    (g_detached,) = torch.autograd.grad(KLToModel(ref, detach_reference=True)(net, x, y).sum(), x)
    assert not torch.allclose(g_through, g_detached)


def test_feature_and_function_losses() -> None:
    class WithFeatures(nn.Module):
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * x.flatten(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

    x = torch.tensor([[3.0, 4.0]])
    y = torch.tensor([0])
    assert FeatureLoss(lambda f, _: f.norm(dim=1))(WithFeatures(), x, y).item() == pytest.approx(10.0)
    with pytest.raises(ConfigError):
        FeatureLoss(lambda f, _: f.sum(1)).check(Identity())
    assert LogitsLoss(lambda z, lab: z[:, 1] - z[:, 0])(Identity(), x, y).item() == pytest.approx(1.0)
    fn_loss = resolve_loss(lambda m, u, lab: m(u).sum(1))
    assert fn_loss(Identity(), x, y).item() == pytest.approx(7.0)
    assert fn_loss.targeted(Identity(), x, y).item() == pytest.approx(-7.0)


def test_loss_names() -> None:
    assert isinstance(resolve_loss("ce"), CrossEntropy)
    assert isinstance(resolve_loss("CW"), CWMargin)
    with pytest.raises(ConfigError):
        resolve_loss("hinge")
    with pytest.raises(ConfigError):
        resolve_loss(3)  # type: ignore[arg-type]
