"""Attacks on a small classifier trained for a few seconds on scikit-learn's digits (8x8, 1 channel)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustdistill.attacks as attacks
from robustdistill.attacks import (
    CW,
    FGSM,
    PGD,
    AutoAttack,
    CWMargin,
    FeatureLoss,
    KLToModel,
    KLToSoftLabels,
)
from robustdistill.errors import ConfigError

EPS = 0.1  # L-inf radius on [0, 1] digits: clean ~96%, FGSM ~46%, PGD-20 ~41% for the model below
EPS_L2 = 0.7
N_TEST = 300
TOL = 1e-6


class MLP(nn.Module):
    """A tiny classifier with the `features` / `head` split of the project's models."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU())
        self.fc = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class SmallCNN(nn.Module):
    """Conv + BatchNorm + Dropout: a model whose train/eval modes differ."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.drop(h.flatten(1)))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn import datasets  # a dependency of the package (the digits dataset)

    data = datasets.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400 : 1400 + N_TEST], y[1400 : 1400 + N_TEST]


@pytest.fixture(scope="module")
def model(digits: tuple[torch.Tensor, ...]) -> MLP:
    x_train, y_train, _, _ = digits
    torch.manual_seed(0)
    net = MLP()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(15):
        for i in range(0, len(x_train), 100):
            optimizer.zero_grad()
            F.cross_entropy(net(x_train[i : i + 100]), y_train[i : i + 100]).backward()
            optimizer.step()
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@pytest.fixture(scope="module")
def test_set(digits: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    return digits[2], digits[3]


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def correct(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x).argmax(1) == y


def assert_in_threat(x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, norm: str) -> None:
    """x_adv (B, ...) or a path (K, B, ...) lies in the eps-ball around x and in [0, 1]."""
    if x_adv.dim() == x.dim() + 1:
        for iterate in x_adv:
            assert_in_threat(iterate, x, eps, norm)
        return
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    delta = (x_adv - x).flatten(1)
    dist = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (dist <= eps + TOL).all(), f"max distance {dist.max().item()} > eps"
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0


def random_targets(y: torch.Tensor, num_classes: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (y + torch.randint(1, num_classes, y.shape, generator=g)) % num_classes


def test_trained_model_is_accurate(model: MLP, test_set: tuple[torch.Tensor, torch.Tensor]) -> None:
    assert accuracy(model, *test_set) > 0.9


# ---------------------------------------------------------------- every example stays in the threat model

ATTACKS: dict[str, Callable[[nn.Module], Callable[..., torch.Tensor]]] = {
    "pgd-linf": lambda m: PGD(m, eps=EPS, steps=10, seed=0),
    "pgd-l2": lambda m: PGD(m, eps=EPS_L2, steps=10, norm="l2", seed=0),
    "pgd-normal-start": lambda m: PGD(m, eps=EPS, random_start="normal", seed=0),
    "pgd-no-start": lambda m: PGD(m, eps=EPS, random_start=False),
    "pgd-restarts": lambda m: PGD(m, eps=EPS, steps=5, restarts=3, seed=0),
    "pgd-l2-restarts": lambda m: PGD(m, eps=EPS_L2, steps=5, norm="l2", restarts=3, seed=0),
    "pgd-path": lambda m: PGD(m, eps=EPS, steps=6, record_path=True, seed=0),
    "pgd-l2-path-restarts": lambda m: PGD(m, eps=EPS_L2, norm="l2", steps=4, restarts=2, record_path=True, seed=0),
    "pgd-kl": lambda m: PGD(m, eps=EPS, loss="kl", random_start="normal", seed=0),
    "fgsm": lambda m: FGSM(m, eps=EPS),
    "fgsm-l2": lambda m: FGSM(m, eps=EPS_L2, norm="l2"),
    "cw": lambda m: CW(m, eps=EPS, seed=0),
    "cw-l2": lambda m: CW(m, eps=EPS_L2, norm="l2", steps=10, seed=0),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_examples_stay_in_the_threat_model(name: str, model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    attack = ATTACKS[name](model)
    x_adv = attack(x, y)
    norm = "l2" if "l2" in name else "linf"
    assert_in_threat(x_adv, x, EPS_L2 if norm == "l2" else EPS, norm)
    final = x_adv[-1] if x_adv.dim() == x.dim() + 1 else x_adv
    assert accuracy(model, final, y) < accuracy(model, x, y) - 0.2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_examples_stay_in_the_threat_model_and_hit_the_target(
    norm: str, model: MLP, test_set: tuple[torch.Tensor, ...]
) -> None:
    x, y = test_set
    t = random_targets(y)
    eps = 2 * EPS if norm == "linf" else 2 * EPS_L2
    for attack in (
        PGD(model, eps=eps, steps=20, norm=norm, targeted=True, seed=0),
        CW(model, eps=eps, steps=20, norm=norm, targeted=True, seed=0),
    ):
        x_adv = attack(x, y, target=t)
        assert_in_threat(x_adv, x, eps, norm)
        with torch.no_grad():
            hit = (model(x_adv).argmax(1) == t).float().mean().item()
        assert hit > 0.5, f"{attack!r} hit only {hit:.0%} of targets (chance: 10%)"


def test_per_sample_eps(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    eps = torch.linspace(0.01, 0.2, len(x))
    x_adv = PGD(model, eps=eps, steps=10, seed=0)(x, y)
    assert_in_threat(x_adv, x, eps, "linf")
    fooled = ~correct(model, x_adv, y)
    assert fooled[len(x) // 2 :].float().mean() > fooled[: len(x) // 2].float().mean() + 0.2
    with pytest.raises(ConfigError):
        PGD(model, eps=eps, steps=10)(x[:10], y[:10])


# ---------------------------------------------------------------- strength


def test_pgd_is_at_least_as_strong_as_fgsm_which_beats_clean(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, FGSM(model, eps=EPS)(x, y), y)
    pgd = accuracy(model, PGD(model, eps=EPS, steps=20, seed=0)(x, y), y)
    cw = accuracy(model, CW(model, eps=EPS, seed=0)(x, y), y)
    assert pgd <= fgsm < clean - 0.2
    assert cw < clean - 0.2


def test_pgd_matches_or_beats_torchattacks(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    x, y = test_set
    torch.manual_seed(0)
    theirs = accuracy(model, torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=20, random_start=True)(x, y), y)
    ours = accuracy(model, PGD(model, eps=EPS, step_size=EPS / 4, steps=20, seed=0)(x, y), y)
    assert ours <= theirs + 0.01, (ours, theirs)
    torch.manual_seed(0)
    theirs_l2 = accuracy(
        model, torchattacks.PGDL2(model, eps=EPS_L2, alpha=EPS_L2 / 4, steps=20, random_start=True)(x, y), y
    )
    ours_l2 = accuracy(model, PGD(model, eps=EPS_L2, norm="l2", steps=20, seed=0)(x, y), y)
    assert ours_l2 <= theirs_l2 + 0.01, (ours_l2, theirs_l2)


def test_restarts_never_raise_accuracy(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    feature_norm = FeatureLoss(lambda f, _: f.norm(dim=1))  # a loss unrelated to misclassification
    for settings in (
        {"steps": 10},
        {"steps": 1, "step_size": 1e-3, "eps": 0.15},
        {"steps": 5, "loss": feature_norm, "eps": 0.15},
    ):
        kwargs = {"eps": EPS, **settings}
        one = PGD(model, restarts=1, seed=3, **kwargs)(x, y)
        many = PGD(model, restarts=4, seed=3, **kwargs)(x, y)
        fooled_one, fooled_many = ~correct(model, one, y), ~correct(model, many, y)
        assert fooled_one.any()
        assert not (fooled_one & ~fooled_many).any(), "a restart undid a successful first run"
        if settings["steps"] == 1:
            # a nearly pure random search: more restarts must fool strictly more samples
            assert fooled_many.sum() > fooled_one.sum()


def test_targeted_restarts_keep_hits(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    t = random_targets(y)
    one = PGD(model, eps=EPS, targeted=True, seed=5)(x, y, target=t)
    many = PGD(model, eps=EPS, targeted=True, restarts=3, seed=5)(x, y, target=t)
    with torch.no_grad():
        hit_one, hit_many = model(one).argmax(1) == t, model(many).argmax(1) == t
    assert not (hit_one & ~hit_many).any()


# ---------------------------------------------------------------- path recording


def test_recorded_path(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    steps = 8
    path = PGD(model, eps=EPS, steps=steps, record_path=True, seed=0)(x, y)
    final = PGD(model, eps=EPS, steps=steps, seed=0)(x, y)
    assert path.shape == (steps, *x.shape)
    torch.testing.assert_close(path[-1], final, rtol=0, atol=0)
    with torch.no_grad():
        ce = torch.stack([F.cross_entropy(model(u), y) for u in path])
        clean_ce = F.cross_entropy(model(x), y)
    assert ce[-1] > ce[0] > clean_ce
    assert (ce[1:] >= ce[:-1] - 1e-3).float().mean() >= 0.8  # rises (almost) step by step
    # consecutive iterates are at most one step apart (L-inf step eps / 4)
    gaps = (path[1:] - path[:-1]).flatten(2).abs().amax(2)
    assert (gaps <= EPS / 4 + TOL).all()


def test_recorded_path_with_restarts_ends_at_the_kept_example(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    path = PGD(model, eps=EPS, steps=5, restarts=3, record_path=True, seed=1)(x, y)
    final = PGD(model, eps=EPS, steps=5, restarts=3, seed=1)(x, y)
    assert path.shape == (5, *x.shape)
    torch.testing.assert_close(path[-1], final, rtol=0, atol=0)


def test_pgd_path_dual_branch_in_one_batch(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    t = random_targets(y)
    b = len(x)
    sign = torch.cat([torch.ones(b), -torch.ones(b)])  # the loss sets each row's direction

    def dual(m: nn.Module, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(u), labels, reduction="none") * sign

    eps = 2 * EPS
    path = PGD(model, eps=eps, steps=10, loss=dual, record_path=True, seed=0)(torch.cat([x, x]), torch.cat([y, t]))
    assert path.shape == (10, 2 * b, *x.shape[1:])
    assert_in_threat(path, torch.cat([x, x]), eps, "linf")
    path_u, path_t = path[:, :b], path[:, b:]
    with torch.no_grad():
        ce_u = [F.cross_entropy(model(u), y).item() for u in path_u]
        ce_t = [F.cross_entropy(model(v), t).item() for v in path_t]
        hit = (model(path_t[-1]).argmax(1) == t).float().mean().item()
    assert ce_u[-1] > ce_u[0]  # ascends CE toward y
    assert ce_t[-1] < ce_t[0]  # descends CE toward t
    assert hit > 0.5  # chance: 10%


def test_pgd_path_from_a_given_start(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    start = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    a = PGD(model, eps=EPS, steps=3, random_start=False, record_path=True)(x, y, start=start)
    b = PGD(model, eps=EPS, steps=3, record_path=True)(x, y, start=start)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # the start makes the random-start choice irrelevant
    torch.testing.assert_close(a[-1], PGD(model, eps=EPS, steps=3)(x, y, start=start), rtol=0, atol=0)


def test_an_unfrozen_attack_runs_the_model_as_it_is_and_keeps_the_graph(model: MLP, test_set) -> None:
    """`freeze=False`: training mode and live parameters; a loss may keep its logits for a training loss."""
    x, y = test_set[0][:16], test_set[1][:16]
    model = copy.deepcopy(model).requires_grad_(True).train()  # a model in training
    kept: list[torch.Tensor] = []
    modes: list[bool] = []

    def keeping(m: nn.Module, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        modes.append(m.training and all(p.requires_grad for p in m.parameters()))
        logits = m(u)
        kept.append(logits)
        return F.cross_entropy(logits, labels, reduction="none")

    live = PGD(model, eps=EPS, steps=3, loss=keeping, freeze=False, record_path=True, seed=4)(x, y)
    frozen = PGD(model, eps=EPS, steps=3, record_path=True, seed=4)(x, y)
    assert modes == [True] * 3 and len(kept) == 3
    torch.testing.assert_close(live, frozen, rtol=0, atol=0)  # no train-mode-dependent layer: the same path
    sum(logits.sum() for logits in kept).backward()  # each step's graph is still there
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


# ---------------------------------------------------------------- inner losses through PGD


def test_kl_to_model_with_itself_gives_zero_loss(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    loss = KLToModel(model)
    assert loss(model, x, y).abs().max().item() < 1e-6
    u = PGD(model, eps=EPS, loss=loss, steps=3, seed=0)(x, y)
    assert loss(model, u, y).abs().max().item() < 1e-6


def test_kl_losses_rise_under_attack(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    torch.manual_seed(1)
    other = MLP().eval()
    with torch.no_grad():
        probs = F.softmax(other(x), dim=1)
    for loss in (KLToSoftLabels(probs), KLToModel(other)):
        start = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
        before = loss(model, start.clamp(0, 1), y).mean()
        x_adv = PGD(model, eps=EPS, loss=loss, random_start="normal", seed=0)(x, y)
        assert_in_threat(x_adv, x, EPS, "linf")
        assert loss(model, x_adv, y).mean() > before + 0.5


def test_kl_to_model_freezes_and_restores_the_reference(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    reference = SmallCNN().train()
    seen: list[tuple[bool, bool]] = []
    inner = KLToModel(reference)

    def spy(net: nn.Module, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen.append((reference.training, any(p.requires_grad for p in reference.parameters())))
        return inner(net, u, labels)

    class Spy(KLToModel):
        def __call__(self, net: nn.Module, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return spy(net, u, labels)

    PGD(model, eps=EPS, steps=2, loss=Spy(reference))(x[:20], y[:20])
    assert seen and all(s == (False, False) for s in seen)
    assert reference.training and all(p.requires_grad for p in reference.parameters())


def test_feature_loss(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    loss = FeatureLoss(lambda f, _: f.norm(dim=1))
    x_adv = PGD(model, eps=EPS, loss=loss, seed=0)(x, y)
    assert_in_threat(x_adv, x, EPS, "linf")
    with torch.no_grad():
        assert model.features(x_adv).norm(dim=1).mean() > model.features(x).norm(dim=1).mean() + 0.5
    with pytest.raises(ConfigError):
        PGD(SmallCNN(), eps=EPS, loss=loss)


def test_plain_function_loss(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set

    def logit_of_class_zero(net: nn.Module, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return net(u)[:, 0]

    x_adv = PGD(model, eps=EPS, loss=logit_of_class_zero, seed=0)(x, y)
    with torch.no_grad():
        assert model(x_adv)[:, 0].mean() > model(x)[:, 0].mean() + 1.0


# ---------------------------------------------------------------- mode and flags


def _state(net: nn.Module) -> tuple[list[bool], list[bool]]:
    return [m.training for m in net.modules()], [p.requires_grad for p in net.parameters()]


def _train_mode_cnn() -> SmallCNN:
    torch.manual_seed(0)
    net = SmallCNN().train()
    net.conv.weight.requires_grad_(False)  # partly frozen
    net.drop.eval()  # mixed modes
    return net


def test_mode_and_requires_grad_are_restored(test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    net = _train_mode_cnn()
    before = _state(net)
    running_mean = net.bn.running_mean.clone()
    seen: list[tuple[bool, bool]] = []

    def spy(m: nn.Module, u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen.append((m.training or m.bn.training, any(p.requires_grad for p in m.parameters())))
        return F.cross_entropy(m(u), labels, reduction="none")

    for attack in (
        PGD(net, eps=EPS, steps=3, loss=spy),
        PGD(net, eps=EPS, steps=2, restarts=2, record_path=True, seed=0),
        FGSM(net, eps=EPS),
        CW(net, eps=EPS, steps=2),
    ):
        attack(x[:50], y[:50])
        assert _state(net) == before
    assert seen and all(s == (False, False) for s in seen)  # eval mode, no parameter gradients
    torch.testing.assert_close(net.bn.running_mean, running_mean)  # BatchNorm ran in eval mode
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize(
    "bad_loss",
    [
        lambda m, u, labels: F.cross_entropy(m(u), labels),  # a scalar, not per sample
        lambda m, u, labels: torch.zeros(len(u)),  # no dependence on the input
        lambda m, u, labels: (_ for _ in ()).throw(RuntimeError("boom")),  # raises
    ],
)
def test_mode_is_restored_after_an_exception(bad_loss: Callable[..., torch.Tensor], test_set: tuple) -> None:
    x, y = test_set
    net = _train_mode_cnn()
    before = _state(net)
    with pytest.raises((ConfigError, RuntimeError)):
        PGD(net, eps=EPS, steps=2, loss=bad_loss)(x[:10], y[:10])
    assert _state(net) == before


def test_bad_loss_shapes_raise_config_errors(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    with pytest.raises(ConfigError, match="one value per sample"):
        PGD(model, eps=EPS, loss=lambda m, u, labels: F.cross_entropy(m(u), labels))(x[:5], y[:5])
    with pytest.raises(ConfigError, match="does not depend on the input"):
        PGD(model, eps=EPS, loss=lambda m, u, labels: torch.zeros(len(u)))(x[:5], y[:5])


def test_works_under_a_no_grad_caller_and_bf16_autocast(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    with torch.no_grad():
        x_adv = PGD(model, eps=EPS, steps=10, seed=0)(x, y)
    assert accuracy(model, x_adv, y) < accuracy(model, x, y) - 0.2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_amp = PGD(model, eps=EPS, steps=10, seed=0)(x, y)
    assert x_amp.dtype == torch.float32
    assert_in_threat(x_amp, x, EPS, "linf")
    assert accuracy(model, x_amp, y) < accuracy(model, x, y) - 0.2


def test_seed_makes_attacks_reproducible(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set
    a = PGD(model, eps=EPS, steps=3, seed=7)(x, y)
    b = PGD(model, eps=EPS, steps=3, seed=7)(x, y)
    c = PGD(model, eps=EPS, steps=3, seed=8)(x, y)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eps": 0.0},
        {"eps": -0.1},
        {"eps": float("nan")},
        {"eps": torch.tensor([0.1, 0.0])},
        {"eps": 0.1, "step_size": 0.0},
        {"eps": 0.1, "step_size": -1.0},
        {"eps": 0.1, "steps": 0},
        {"eps": 0.1, "steps": 2.5},
        {"eps": 0.1, "restarts": 0},
        {"eps": 0.1, "restarts": 2, "random_start": False},
        {"eps": 0.1, "norm": "l1"},
        {"eps": 0.1, "loss": "hinge"},
        {"eps": 0.1, "random_start": "gaussian"},
        {"eps": 0.1, "seed": "zero"},
    ],
)
def test_bad_pgd_arguments_raise_config_error(kwargs: dict, model: MLP) -> None:
    with pytest.raises(ConfigError):
        PGD(model, **kwargs)


def test_bad_call_arguments_raise_config_error(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set[0][:8], test_set[1][:8]
    with pytest.raises(ConfigError, match="target"):
        PGD(model, eps=EPS, targeted=True)(x, y)
    with pytest.raises(ConfigError, match="true label"):
        PGD(model, eps=EPS, targeted=True)(x, y, target=torch.cat([y[:1], random_targets(y)[1:]]))
    with pytest.raises(ConfigError):
        PGD(model, eps=EPS)(x, y, target=random_targets(y))
    with pytest.raises(ConfigError):
        PGD(model, eps=EPS)(x, y.float())
    with pytest.raises(ConfigError):
        PGD(model, eps=EPS)(x, y[:4])
    with pytest.raises(ConfigError):
        PGD(model, eps=EPS)(x, y, start=x[:2])
    with pytest.raises(ConfigError):
        PGD(object(), eps=EPS)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PGD(model, 0.1)  # type: ignore[misc]  # eps is keyword-only


def test_swapped_step_and_eps_warn(model: MLP) -> None:
    with pytest.warns(UserWarning, match="swapped"):
        PGD(model, eps=0.01, step_size=0.1, steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PGD(model, eps=0.1, step_size=0.5, steps=1)  # one step larger than eps is not suspicious
        PGD(model, eps=0.1, steps=10)
        FGSM(model, eps=0.1)


# ---------------------------------------------------------------- AutoAttack


def test_autoattack_is_at_least_as_strong_as_pgd(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set[0][:100], test_set[1][:100]
    rng_before = torch.get_rng_state()
    aa = AutoAttack(model, eps=EPS, version="custom", attacks=["apgd-ce", "apgd-t"], seed=0)
    x_aa = aa(x, y)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random state is untouched
    assert_in_threat(x_aa, x, EPS, "linf")
    pgd = accuracy(model, PGD(model, eps=EPS, steps=20, seed=0)(x, y), y)
    assert accuracy(model, x_aa, y) <= pgd + 0.01
    assert accuracy(model, x_aa, y) < accuracy(model, x, y) - 0.2


def test_autoattack_progress_runs_the_reference_attacks_one_by_one_with_the_same_result(
    model: MLP, test_set: tuple[torch.Tensor, ...]
) -> None:
    x, y = test_set[0][:24], test_set[1][:24]
    options = {"eps": EPS, "version": "custom", "attacks": ["apgd-ce", "apgd-t"], "seed": 0, "batch_size": 16}
    whole = AutoAttack(model, **options)(x, y)
    reports: list[tuple[str, int, int]] = []
    in_turn = AutoAttack(model, **options, progress=lambda *report: reports.append(report))(x, y)
    assert torch.equal(in_turn, whole)
    started = [r[0] for r in reports if r[1] == 0]
    assert started == ["apgd-ce", "apgd-t"]  # one bar per reference attack, in the reference's order
    for name in started:
        mine = [(done, total) for attack, done, total in reports if attack == name]
        dones = [done for done, _ in mine]
        assert dones == sorted(dones) and mine[-1][0] == mine[-1][1] > 1  # moves forward and ends at its total
        assert len(mine) > 10  # a real bar: many updates, not a jump from 0 to 1
    with pytest.raises(ConfigError, match="progress must be a callable"):
        AutoAttack(model, eps=EPS, progress="yes")  # type: ignore[arg-type]


def test_autoattack_l2(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set[0][:50], test_set[1][:50]
    x_aa = AutoAttack(model, eps=EPS_L2, norm="L2", version="custom", attacks=["apgd-ce"])(x, y)
    assert_in_threat(x_aa, x, EPS_L2, "l2")
    assert accuracy(model, x_aa, y) < accuracy(model, x, y) - 0.2


def test_autoattack_restores_mode_and_flags(test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set[0][:20], test_set[1][:20]
    net = _train_mode_cnn()
    before = _state(net)
    running_mean = net.bn.running_mean.clone()
    AutoAttack(net, eps=EPS, version="custom", attacks=["apgd-ce"])(x, y)
    assert _state(net) == before
    torch.testing.assert_close(net.bn.running_mean, running_mean)


def test_autoattack_standard_builds_the_reference_protocol(model: MLP) -> None:
    import pyautoattack  # a dependency of the package (the reference AutoAttack)

    aa = AutoAttack(model, eps=8 / 255)
    adversary = aa._build(pyautoattack, 10, torch.device("cpu"))
    assert adversary.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert adversary.apgd_targeted.n_target_classes == 9 and adversary.fab.n_target_classes == 9
    assert adversary.epsilon == pytest.approx(8 / 255) and adversary.norm == "Linf"
    with pytest.warns(RuntimeWarning, match="APGD-T"):
        small = aa._build(pyautoattack, 3, torch.device("cpu"))
    assert small.attacks_to_run == ["apgd-ce", "fab-t", "square"]
    assert small.fab.n_target_classes == 2
    with pytest.raises(ConfigError):
        AutoAttack(model, eps=0.1, version="custom", attacks=["apgd-t"])._plan(3)


def test_autoattack_standard_runs_on_a_few_samples(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    x, y = test_set[0][:16], test_set[1][:16]
    x_aa = AutoAttack(model, eps=0.2, batch_size=8)(x, y)
    assert_in_threat(x_aa, x, 0.2, "linf")
    assert accuracy(model, x_aa, y) <= accuracy(model, PGD(model, eps=0.2, steps=20, seed=0)(x, y), y) + 1e-6


def test_autoattack_bad_arguments(model: MLP) -> None:
    for kwargs in (
        {"eps": 0.0},
        {"eps": 0.1, "version": "fast"},
        {"eps": 0.1, "version": "custom"},
        {"eps": 0.1, "version": "custom", "attacks": ["apgd-xx"]},
        {"eps": 0.1, "version": "custom", "attacks": ["apgd-ce", "apgd-ce"]},
        {"eps": 0.1, "attacks": ["apgd-ce"]},
        {"eps": 0.1, "norm": "L1"},
        {"eps": 0.1, "batch_size": 0},
    ):
        with pytest.raises(ConfigError):
            AutoAttack(model, **kwargs)


# ---------------------------------------------------------------- create / available


def test_create_maps_spec_strings(model: MLP) -> None:
    pgd20 = attacks.create("pgd-20", model, 0.1)
    assert isinstance(pgd20, PGD) and pgd20.steps == 20 and pgd20.step_size == pytest.approx(0.025)
    assert pgd20.random_start == "uniform"
    assert attacks.create("PGD", model, 0.1).steps == 20
    assert attacks.create("pgd-10", model, 0.1, norm="l2", seed=1).norm == "l2"
    cw = attacks.create("cw", model, 0.1)
    assert isinstance(cw, CW) and cw.steps == 30 and isinstance(cw.loss, CWMargin)
    assert isinstance(attacks.create("fgsm", model, 0.1), FGSM)
    aa = attacks.create("autoattack", model, 0.1)
    assert isinstance(aa, AutoAttack) and aa.version == "standard"
    apgd = attacks.create("apgd-ce", model, 0.1)
    assert apgd.version == "custom" and apgd.attacks == ["apgd-ce"]
    assert attacks.create("apgd-ce+apgd-t", model, 0.1).attacks == ["apgd-ce", "apgd-t"]
    for name in ("fgsm", "pgd", "cw", "autoattack", "apgd-ce", "apgd-t", "fab-t", "square"):
        assert name in attacks.available()


def test_create_rejects_bad_specs(model: MLP) -> None:
    with pytest.raises(ConfigError, match="Did you mean 'fgsm'"):
        attacks.create("fgms", model, 0.1)
    with pytest.raises(ConfigError, match="fixed"):
        attacks.create("pgd-20", model, 0.1, steps=10)
    with pytest.raises(ConfigError, match="no option"):
        attacks.create("fgsm", model, 0.1, restarts=3)
    with pytest.raises(ConfigError):
        attacks.create("pgd-0", model, 0.1)
    with pytest.raises(ConfigError):
        attacks.create("pgd-20", model, -0.1)


# ---------------------------------------------------------------- GPU (skipped on CPU-only machines)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_loop_never_synchronises_with_the_host_on_cuda(model: MLP, test_set: tuple[torch.Tensor, ...]) -> None:
    net = copy.deepcopy(model).cuda()
    x, y = test_set[0].cuda(), test_set[1].cuda()
    attack = PGD(net, eps=EPS, steps=5, restarts=2, record_path=True, seed=0)
    attack(x, y)  # warm-up: allocations, generator creation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        path = attack(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert path.device == x.device
    assert_in_threat(path.cpu(), x.cpu(), EPS, "linf")


def test_attacks_accept_the_project_classifiers(test_set: tuple[torch.Tensor, ...]) -> None:
    """Integration with `robustdistill.models`: attacks leave a project classifier's state as it was."""
    from robustdistill import models

    torch.manual_seed(0)
    net = models.create("smallcnn", num_classes=10, in_channels=1, width=0.25, hidden=32, dropout=0.0)
    x, y = test_set[0][:32], test_set[1][:32]
    net.train()
    before = _state(net)
    for attack in (
        PGD(net, eps=EPS, steps=3, seed=0),
        PGD(net, eps=EPS, steps=3, loss=FeatureLoss(lambda f, _: f.norm(dim=1)), seed=0),
        PGD(net, eps=EPS, steps=3, loss=KLToModel(copy.deepcopy(net)), random_start="normal", seed=0),
    ):
        assert_in_threat(attack(x, y), x, EPS, "linf")
        assert _state(net) == before
