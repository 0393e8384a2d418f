"""Teacher objective `fgsm-rs` (Wong, Rice & Kolter 2020): FGSM with step 1.25·eps from a uniform start."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdistill import methods
from robustdistill.attacks import shared_random_starts
from robustdistill.attacks.randomness import batch_noise
from robustdistill.errors import ConfigError
from robustdistill.methods.fgsm_rs import FGSMRS

EPS = 0.1


@pytest.fixture(scope="module")
def trained(digits_train) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A logistic regression on the 8x8 digits, trained to well above chance."""
    x = torch.as_tensor(digits_train.images).float().div(255).view(len(digits_train), 1, 8, 8)
    y = torch.as_tensor(digits_train.labels).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model, x, y


def test_registered_as_a_teacher_objective_with_the_papers_step():
    method = methods.create("fgsm-rs", eps=EPS)
    assert isinstance(method, FGSMRS) and method.name == "fgsm-rs" and not method.needs_teacher
    assert isinstance(methods.create("fast-at"), FGSMRS)
    assert method.attack.steps == 1 and method.attack.step_size == pytest.approx(1.25 * EPS)
    assert method.options.to_dict() == {"eps": EPS, "step_size": None, "norm": "linf", "reuse_steps": 0}
    assert methods.create("fgsm-rs", eps=EPS, step_size=0.05).attack.step_size == 0.05
    assert set(methods.spec("fgsm-rs").options.keys()) == {"eps", "step_size", "norm", "reuse_steps"}
    with pytest.raises(ConfigError, match="has no option 'steps'"):
        methods.create("fgsm-rs", steps=3)
    with pytest.raises(ConfigError, match="eps"):
        methods.create("fgsm-rs", eps=-0.1)


def test_the_example_is_the_formula_and_stays_in_the_ball(trained):
    model, x, y = trained
    x, y = x[:64], y[:64]
    method = methods.create("fgsm-rs", eps=EPS)
    with shared_random_starts(7):
        x_adv = method.attack.perturb(model, x, y, torch.arange(64), random_start="uniform")
    with shared_random_starts(7):  # the same uniform draw, by hand: x + delta_0 + 1.25 eps sign(grad)
        delta = (batch_noise("uniform", x.shape, device=x.device, dtype=x.dtype) * 2 - 1) * EPS
    start = (x + delta).clamp(0, 1).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(start), y, reduction="sum"), start)
    moved = start.detach() + 1.25 * EPS * grad.sign()
    expected = torch.min(torch.max(moved, x - EPS), x + EPS).clamp(0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-6)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 0.9 * EPS  # a real step, not the start


def test_it_lowers_the_accuracy_of_a_trained_model_and_trains(trained):
    model, x, y = trained
    method = methods.create("fgsm-rs", eps=EPS)
    with shared_random_starts(1):
        x_adv = method.attack.perturb(model, x, y, torch.arange(len(x)), random_start="uniform")
    clean = (model(x).argmax(1) == y).float().mean().item()
    adversarial = (model(x_adv).argmax(1) == y).float().mean().item()
    assert clean > 0.85
    assert adversarial < clean - 0.3
    terms = method(model, x[:32], y[:32], torch.arange(32))
    (grad,) = torch.autograd.grad(terms["loss"], model[1].weight)
    assert set(terms) == {"loss", "ce_adv", "acc_adv"} and grad.abs().sum() > 0
