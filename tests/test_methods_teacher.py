"""Teacher-training objectives equal their formulas (METHODS.md) on hand-checked tensors."""

import math

import pytest
import torch
from torch import nn

from robustdistill import methods
from robustdistill.errors import ConfigError
from robustdistill.methods import AttackSettings

X = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]], [[[0.9, 0.1], [0.3, 0.5]]]])
X_ADV = torch.tensor([[[[0.3, 0.3], [0.5, 0.9]]], [[[0.8, 0.2], [0.2, 0.6]]]])
Y = torch.tensor([0, 2])
W = [[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0], [-1.0, 0.5, 1.0, -0.5]]


def linear_model() -> nn.Module:
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W))
    return nn.Sequential(nn.Flatten(), layer)


def logits_by_hand(image: torch.Tensor) -> list[float]:
    flat = image.flatten().tolist()
    return [sum(w * v for w, v in zip(row, flat, strict=True)) for row in W]


def softmax(z: list[float]) -> list[float]:
    exps = [math.exp(v) for v in z]
    return [e / sum(exps) for e in exps]


def ce(z: list[float], y: int) -> float:
    return -math.log(softmax(z)[y])


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


@pytest.fixture
def fixed_attack(monkeypatch):
    calls = []

    def fake_pgd(self, model, *, loss="ce", random_start=True, **kwargs):
        calls.append({"model": model, "loss": loss, "random_start": random_start})

        def attack(x, y, **kw):
            calls[-1]["attacked"] = x.clone()
            return X_ADV[len(X_ADV) - len(x) :].clone()

        return attack

    monkeypatch.setattr(AttackSettings, "pgd", fake_pgd)
    return calls


def test_standard_is_clean_cross_entropy():
    out = methods.create("standard").compute(linear_model(), X, Y, torch.arange(2))
    expected = sum(ce(logits_by_hand(X[i]), int(Y[i])) for i in range(2)) / 2
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)


def test_pgd_at_is_cross_entropy_at_the_attack(fixed_attack):
    model = linear_model()
    out = methods.create("pgd-at", eps=0.1).compute(model, X, Y, torch.arange(2))
    expected = sum(ce(logits_by_hand(X_ADV[i]), int(Y[i])) for i in range(2)) / 2
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)
    assert fixed_attack[0]["model"] is model and fixed_attack[0]["loss"] == "ce"


def test_pgd_at_clean_fraction_attacks_only_the_rest_of_the_batch(fixed_attack):
    out = methods.create("pgd-at", eps=0.1, clean_fraction=0.5).compute(linear_model(), X, Y, torch.arange(2))
    expected = (ce(logits_by_hand(X[0]), int(Y[0])) + ce(logits_by_hand(X_ADV[1]), int(Y[1]))) / 2
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(fixed_attack[0]["attacked"], X[1:])
    assert out["ce_adv"].item() == pytest.approx(ce(logits_by_hand(X_ADV[1]), int(Y[1])), abs=1e-6)


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_pgd_at_clean_fraction_out_of_range(fraction):
    with pytest.raises(ConfigError, match="clean_fraction"):
        methods.create("pgd-at", clean_fraction=fraction)


def test_trades_formula(fixed_attack):
    out = methods.create("trades", beta=6.0, eps=0.1).compute(linear_model(), X, Y, torch.arange(2))
    natural = sum(ce(logits_by_hand(X[i]), int(Y[i])) for i in range(2)) / 2
    robust = sum(kl(softmax(logits_by_hand(X[i])), softmax(logits_by_hand(X_ADV[i]))) for i in range(2)) / 2
    assert out["loss"].item() == pytest.approx(natural + 6.0 * robust, abs=1e-6)
    assert fixed_attack[0]["random_start"] == "normal"
    assert type(fixed_attack[0]["loss"]).__name__ == "KLToSoftLabels"


def test_mart_formula(fixed_attack):
    out = methods.create("mart", lam=6.0, eps=0.1).compute(linear_model(), X, Y, torch.arange(2))
    total = 0.0
    for i in range(2):
        y = int(Y[i])
        p_adv = softmax(logits_by_hand(X_ADV[i]))
        p_nat = softmax(logits_by_hand(X[i]))
        bce = -math.log(p_adv[y]) - math.log(1.0001 - max(p for j, p in enumerate(p_adv) if j != y))
        total += bce + 6.0 * kl(p_nat, p_adv) * (1 - p_nat[y])
    assert out["loss"].item() == pytest.approx(total / 2, abs=1e-6)
    # the official attack (YisenWang/MART mart.py): CE from x + 0.001·N(0, 1)
    assert fixed_attack[0]["loss"] == "ce" and fixed_attack[0]["random_start"] == "normal"


@pytest.mark.parametrize(
    "name, options",
    [("pgd-at", {"eps": 0}), ("pgd-at", {"steps": 0}), ("trades", {"beta": -1}), ("pgd-at", {"norm": "l3"})],
)
def test_bad_options_are_refused(name, options):
    with pytest.raises(ConfigError):
        methods.create(name, **options)


def test_unknown_method_and_option_suggest():
    with pytest.raises(ConfigError, match="Did you mean 'trades'"):
        methods.create("trade")
    with pytest.raises(ConfigError, match="Did you mean 'beta'"):
        methods.create("trades", betta=1.0)
