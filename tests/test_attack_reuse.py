"""Perturbation reuse across epochs (`reuse_steps`): the bank of each training sample's last perturbation.

The bank is keyed by dataset index, starts the next attack inside the eps-ball of the new clean image
and in [0, 1], runs `reuse_steps` steps from there, lives in the method's state_dict, and a run
interrupted and resumed equals an uninterrupted one bit for bit (bank included).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustdistill import data, methods
from robustdistill.attacks import PerturbationBank, get_threat, shared_random_starts
from robustdistill.config import RunConfig
from robustdistill.errors import ConfigError
from robustdistill.methods import AttackOptions, AttackSettings
from robustdistill.train import fit
from tests.conftest import tiny_cnn

EPS = 0.1


class Counting(nn.Module):
    """A tiny classifier on 8x8 images that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(64, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.layer(x.flatten(1))


def _batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def test_first_attack_is_plain_pgd_and_the_bank_keeps_its_perturbation():
    model = Counting()
    x, y = _batch()
    index = torch.tensor([7, 2, 9, 0, 4, 5])
    plain = AttackSettings(AttackOptions(eps=EPS, steps=3))
    reuse = AttackSettings(AttackOptions(eps=EPS, steps=3, reuse_steps=1), num_samples=10)
    with shared_random_starts(11):
        expected = plain.perturb(model, x, y, index)
    with shared_random_starts(11):
        got = reuse.perturb(model, x, y, index)
    assert torch.equal(got, expected)
    bank = reuse.bank
    assert bank.seen.tolist() == [i in index.tolist() for i in range(10)]
    assert torch.equal(bank.delta[index], expected - x)
    assert not bank.delta[~bank.seen].any()


def test_the_next_attack_starts_from_the_stored_point_with_reuse_steps():
    model = Counting()
    x, y = _batch()
    index = torch.arange(6)
    settings = AttackSettings(AttackOptions(eps=EPS, steps=5, reuse_steps=2), num_samples=6)
    settings.perturb(model, x, y, index)
    assert model.calls == 5
    stored = settings.bank.delta.clone()
    model.calls = 0
    seen_starts = []
    original = settings.pgd

    def spy(*args, **kwargs):
        attack = original(*args, **kwargs)

        def run(xb, yb, *, start=None):
            seen_starts.append(start)
            return attack(xb, yb, start=start)

        return run

    settings.pgd = spy  # type: ignore[method-assign]
    settings.perturb(model, x, y, index)
    assert model.calls == 2  # reuse_steps, not steps
    assert torch.equal(seen_starts[0], get_threat("linf").project(x + stored, x, EPS))


def test_a_batch_with_an_unseen_sample_runs_every_step_from_mixed_starts():
    model = Counting()
    x, y = _batch()
    settings = AttackSettings(AttackOptions(eps=EPS, steps=4, reuse_steps=1), num_samples=10)
    settings.perturb(model, x[:3], y[:3], torch.tensor([0, 1, 2]))
    model.calls = 0
    threat = get_threat("linf")
    start, every = settings.bank.start(x, torch.tensor([0, 1, 2, 3, 4, 5]), eps=EPS, threat=threat, random_start=True)
    assert not every
    assert torch.equal(start[:3], threat.project(x[:3] + settings.bank.delta[:3], x[:3], EPS))
    assert not torch.equal(start[3:], x[3:])  # a random start where nothing is stored
    settings.perturb(model, x, y, torch.arange(6))
    assert model.calls == 4


def test_starts_stay_in_the_ball_and_the_image_range_on_a_new_view():
    model = Counting()
    x, y = _batch(32)
    index = torch.arange(32)
    settings = AttackSettings(AttackOptions(eps=EPS, steps=3, reuse_steps=1), num_samples=32)
    settings.perturb(model, x, y, index)
    shifted = torch.roll(x, shifts=1, dims=3)  # another augmented view of the same samples
    shifted[:4] = 0.0  # and some at the border of the image range
    shifted[4:8] = 1.0
    start, every = settings.bank.start(shifted, index, eps=EPS, threat=get_threat("linf"), random_start=True)
    assert every
    assert (start - shifted).abs().max() <= EPS + 1e-6
    assert start.min() >= 0.0 and start.max() <= 1.0
    x_adv = settings.perturb(model, shifted, y, index)
    assert (x_adv - shifted).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_the_bank_is_keyed_by_dataset_index_across_shuffled_epochs(digits_train):
    model = Counting()
    dataset = data.subset(digits_train, 40, seed=1)
    loader = data.Loader(dataset, 8, shuffle=True, seed=5)
    settings = AttackSettings(AttackOptions(eps=EPS, steps=2, reuse_steps=1), num_samples=len(dataset))
    found: dict[int, torch.Tensor] = {}
    loader.set_epoch(0)
    for x, y, index in loader:
        x_adv = settings.perturb(model, x, y, index)
        found.update({int(i): x_adv[j] for j, i in enumerate(index)})
    loader.set_epoch(1)
    orders = [loader.order(0).tolist(), loader.order(1).tolist()]
    assert orders[0] != orders[1]  # the second epoch visits the samples in another order
    threat = get_threat("linf")
    for x, _, index in loader:
        start, every = settings.bank.start(x, index, eps=EPS, threat=threat, random_start=True)
        assert every
        for j, i in enumerate(index.tolist()):  # no augmentation: the start is the last epoch's x' of i
            assert torch.allclose(start[j], found[i], atol=1e-6), i


def test_reuse_is_an_option_of_every_method_that_attacks_the_student():
    x, y = _batch(8)
    index = torch.tensor([3, 1, 4, 0, 5, 9, 2, 6])
    attacking = ("pgd-at", "fgsm-rs", "trades", "mart", "ard", "iad", "rslad", "adaad", "mtard", "gacd", "dgad", "saad")
    for name in attacking:
        options: dict = {"eps": EPS, "reuse_steps": 1, "num_samples": 10}
        if name not in ("pgd-at", "fgsm-rs", "trades", "mart"):
            options["teacher"] = tiny_cnn(seed=2)
        if name == "mtard":
            options["natural_teacher"] = tiny_cnn(seed=3)
        if name == "iad":
            options["warmup_epochs"] = 0
        if name == "gacd":
            options.update(student_dim=32, nce_k=4, feat_dim=4)
        if name != "fgsm-rs":
            options["steps"] = 2
        method = methods.create(name, **options)
        student = tiny_cnn(seed=1)
        method(student, x, y, index)["loss"].backward()
        bank = method.attack.bank
        assert bank.seen.tolist() == [i in index.tolist() for i in range(10)], name
        assert (bank.delta.abs() <= EPS + 1e-6).all(), name
        assert "attack.bank._extra_state" in method.state_dict(), name
        assert method.options.to_dict()["reuse_steps"] == 1, name
    with pytest.raises(ConfigError, match="has no option 'reuse_steps'"):
        methods.create("paths", teacher=tiny_cnn(), reuse_steps=1)  # paths aligns the path from x: no reuse
    with pytest.raises(ConfigError, match=r"reuse_steps.*in \[0, 1\]"):
        methods.create("fgsm-rs", reuse_steps=2, num_samples=10)  # one attack step


def test_reuse_options_are_validated():
    with pytest.raises(ConfigError, match=r"reuse_steps.*0\.\.steps"):
        AttackSettings(AttackOptions(eps=EPS, steps=3, reuse_steps=4), num_samples=10)
    for bad in (-1, True, 1.5):
        with pytest.raises(ConfigError, match="reuse_steps"):
            AttackSettings(AttackOptions(eps=EPS, steps=3, reuse_steps=bad), num_samples=10)
    with pytest.raises(ConfigError, match="num_samples"):
        methods.create("pgd-at", eps=EPS, reuse_steps=1)
    with pytest.raises(ConfigError, match="num_samples >= 1"):
        PerturbationBank(0)
    settings = AttackSettings(AttackOptions(eps=EPS, steps=2, reuse_steps=1), num_samples=4)
    x, y = _batch(2)
    with pytest.raises(ConfigError, match="out of range"):
        settings.perturb(Counting(), x, y, torch.tensor([1, 4]))
    with pytest.raises(ConfigError, match="dataset index"):
        settings.perturb(Counting(), x, y, None)
    assert AttackSettings(AttackOptions(eps=EPS)).bank is None


def test_the_bank_round_trips_through_the_state_dict_and_checks_its_size():
    model = Counting()
    x, y = _batch()
    method = methods.create("pgd-at", eps=EPS, steps=2, reuse_steps=1, num_samples=10)
    method.attack.perturb(model, x, y, torch.arange(6))
    state = method.state_dict()
    fresh = methods.create("pgd-at", eps=EPS, steps=2, reuse_steps=1, num_samples=10)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.attack.bank.delta, method.attack.bank.delta)
    assert torch.equal(fresh.attack.bank.seen, method.attack.bank.seen)
    other = methods.create("pgd-at", eps=EPS, steps=2, reuse_steps=1, num_samples=12)
    with pytest.raises(ConfigError, match="same training set"):
        other.load_state_dict(state)


BASE = dict(
    epochs=2,
    batch_size=32,
    lr=0.05,
    eps=EPS,
    steps=3,
    seed=3,
    deterministic=True,
    eval_every=0,
    log_every=2,
    checkpoint_every=2,
    data="digits",
)


def _fit(run_dir, train, method, *, resume=False):
    student = tiny_cnn(seed=1)
    fit(
        student,
        method,
        train,
        config=RunConfig(**BASE),
        run_dir=run_dir,
        resume=resume,
        progress=False,
        augment={"padding": 1, "flip": False},
    )
    return student


def test_training_with_reuse_resumes_bit_identically(tmp_path, digits_train, monkeypatch):
    train = data.subset(digits_train, 96, seed=0)  # 3 steps per epoch

    def make():
        return methods.create("pgd-at", eps=EPS, steps=3, reuse_steps=1, num_samples=len(train))

    reference_method = make()
    reference = _fit(tmp_path / "a", train, reference_method)
    assert bool(reference_method.attack.bank.seen.all())

    crashing = make()
    original = type(crashing).compute
    calls = {"n": 0}

    def crash_at_step_6(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # second epoch, one step after the checkpoint of step 4 (the bank half renewed)
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(crashing), "compute", crash_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "b", train, crashing)
    monkeypatch.setattr(type(crashing), "compute", original)
    resumed_method = make()
    resumed = _fit(tmp_path / "b", train, resumed_method, resume=True)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(resumed_method.attack.bank.delta, reference_method.attack.bank.delta)
    assert torch.equal(resumed_method.attack.bank.seen, reference_method.attack.bank.seen)
