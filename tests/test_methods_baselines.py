"""Distillation baselines (kd, ard, iad, rslad, adaad, mtard) equal their formulas (METHODS.md).

Each loss is checked against a value computed here by explicit arithmetic on fixed tensors, with the
attack replaced by a recorder that returns a known x'; the recorder also shows which model the inner
maximisation attacks and with which loss. Smoke tests run the real attack on a tiny network.
"""

import math

import pytest
import torch
from torch import nn

from robustdistill import methods
from robustdistill.attacks import CrossEntropy, KLToModel, KLToSoftLabels, resolve_loss
from robustdistill.attacks.pgd import resolve_start
from robustdistill.errors import ConfigError
from robustdistill.methods import AttackSettings

X = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]], [[[0.9, 0.1], [0.3, 0.5]]]])
X_ADV = torch.tensor([[[[0.3, 0.3], [0.5, 0.9]]], [[[0.8, 0.2], [0.2, 0.6]]]])
Y = torch.tensor([0, 2])
INDEX = torch.arange(2)
W_S = [[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0], [-1.0, 0.5, 1.0, -0.5]]  # student
W_T = [[0.5, 0.5, -1.0, 1.0], [1.5, -0.5, 0.0, 0.5], [-0.5, 1.0, 1.0, -1.0]]  # (robust) teacher
W_N = [[2.0, 0.0, -0.5, 0.5], [-1.0, 1.0, 0.5, 0.0], [0.0, -1.5, 1.0, 1.0]]  # natural teacher


class Linear(nn.Module):
    """A bias-free linear classifier on flattened 2x2 images that records the inputs it is called on."""

    def __init__(self, weights: list[list[float]]) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            self.layer.weight.copy_(torch.tensor(weights))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.layer(x.flatten(1))


def logits(weights: list[list[float]], image: torch.Tensor) -> list[float]:
    flat = image.flatten().tolist()
    return [sum(w * v for w, v in zip(row, flat, strict=True)) for row in weights]


def softmax(z: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(v / temperature) for v in z]
    return [e / sum(exps) for e in exps]


def ce(z: list[float], y: int) -> float:
    return -math.log(softmax(z)[y])


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def kl_mean(w_p, inputs_p, w_q, inputs_q, temperature: float = 1.0) -> float:
    """mean_i KL(softmax(P(inputs_p[i]) / T) || softmax(Q(inputs_q[i]) / T)) by hand."""
    return mean(
        [
            kl(softmax(logits(w_p, inputs_p[i]), temperature), softmax(logits(w_q, inputs_q[i]), temperature))
            for i in range(len(Y))
        ]
    )


def ce_mean(weights, inputs) -> float:
    return mean([ce(logits(weights, inputs[i]), int(Y[i])) for i in range(len(Y))])


def same_inputs(recorded: list[torch.Tensor], expected: list[torch.Tensor]) -> bool:
    return len(recorded) == len(expected) and all(torch.equal(a, b) for a, b in zip(recorded, expected, strict=True))


@pytest.fixture
def fixed_attack(monkeypatch):
    """Replace the inner maximisation by one that returns X_ADV and records how it was built and called."""
    calls = []

    def fake_pgd(self, model, *, loss="ce", random_start=True, **kwargs):
        call = {"model": model, "loss": loss, "random_start": random_start, "kwargs": kwargs, "inputs": []}
        calls.append(call)

        def attack(x, y, **kw):
            call["inputs"].append((x.clone(), y.clone()))
            return X_ADV.clone()

        return attack

    monkeypatch.setattr(AttackSettings, "pgd", fake_pgd)
    return calls


def only_call(calls: list[dict], student: nn.Module) -> dict:
    assert len(calls) == 1
    call = calls[0]
    assert call["model"] is student
    assert len(call["inputs"]) == 1
    assert torch.equal(call["inputs"][0][0], X) and torch.equal(call["inputs"][0][1], Y)
    return call


# ---------------------------------------------------------------------------------------------- kd


def test_kd_formula_with_defaults(fixed_attack):
    student, teacher = Linear(W_S), Linear(W_T)
    method = methods.create("kd", teacher=teacher)
    assert method.options.to_dict() == {"tau": 4.0, "alpha": 0.9}
    out = method.compute(student, X, Y, INDEX)
    expected = 0.9 * 4.0**2 * kl_mean(W_T, X, W_S, X, 4.0) + 0.1 * ce_mean(W_S, X)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert out["kl_distill"].item() == pytest.approx(kl_mean(W_T, X, W_S, X, 4.0), abs=1e-6)
    assert fixed_attack == []  # no inner maximisation
    assert same_inputs(teacher.inputs, [X]) and same_inputs(student.inputs, [X])


# --------------------------------------------------------------------------------------------- ard


@pytest.mark.parametrize("alpha", [1.0, 0.7])
def test_ard_formula(fixed_attack, alpha):
    student, teacher = Linear(W_S), Linear(W_T)
    method = methods.create("ard", teacher=teacher, tau=3.0, alpha=alpha, eps=0.1)
    out = method.compute(student, X, Y, INDEX)
    expected = alpha * 3.0**2 * kl_mean(W_T, X, W_S, X_ADV, 3.0) + (1 - alpha) * ce_mean(W_S, X)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    call = only_call(fixed_attack, student)
    assert isinstance(resolve_loss(call["loss"]), CrossEntropy)
    assert resolve_start(call["random_start"]) == "uniform"
    assert same_inputs(teacher.inputs, [X])  # the teacher sees the clean input
    # alpha = 1: the clean cross-entropy has weight zero and its forward pass is skipped
    assert same_inputs(student.inputs, [X_ADV] if alpha == 1.0 else [X_ADV, X])
    assert ("ce" in out) == (alpha < 1)


def test_ard_defaults():
    method = methods.create("ard", teacher=Linear(W_T))
    options = method.options.to_dict()
    assert options["tau"] == 30.0 and options["alpha"] == 1.0
    assert options["eps"] == pytest.approx(8 / 255) and options["step_size"] is None  # None: eps / 4
    assert method.attack.step_size == pytest.approx(2 / 255)
    assert options["steps"] == 10


# --------------------------------------------------------------------------------------------- iad


def iad_introspection(beta: float) -> float:
    """mean_i (1 − p_T(y_i | x'_i)^beta) · KL(p_S(x_i) || p_S(x'_i)), by hand."""
    values = []
    for i in range(len(Y)):
        trust = softmax(logits(W_T, X_ADV[i]))[int(Y[i])] ** beta
        values.append((1 - trust) * kl(softmax(logits(W_S, X[i])), softmax(logits(W_S, X_ADV[i]))))
    return mean(values)


def test_iad_introspection_is_off_during_warmup_and_on_after(fixed_attack):
    student, teacher = Linear(W_S), Linear(W_T)
    method = methods.create("iad", teacher=teacher, tau=2.0, alpha=0.8, beta=0.5, warmup_epochs=3, eps=0.1)
    ard = 0.8 * 2.0**2 * kl_mean(W_T, X, W_S, X_ADV, 2.0) + 0.2 * ce_mean(W_S, X)

    method.on_epoch_start(2)  # last warm-up epoch: ARD's loss only, no teacher query at x'
    out = method.compute(student, X, Y, INDEX)
    assert out["loss"].item() == pytest.approx(ard, rel=1e-6, abs=1e-6)
    assert "kl_introspection" not in out
    assert same_inputs(teacher.inputs, [X])

    teacher.inputs.clear()
    method.on_epoch_start(3)  # introspection on, weighted by alpha_intro = alpha
    out = method.compute(student, X, Y, INDEX)
    intro = iad_introspection(0.5)
    assert intro > 1e-3  # the term is not negligible on these tensors: the check below can fail
    assert out["loss"].item() == pytest.approx(ard + 0.8 * intro, rel=1e-6, abs=1e-6)
    assert out["kl_introspection"].item() == pytest.approx(intro, abs=1e-6)
    assert same_inputs(teacher.inputs, [X, X_ADV])  # teacher term on x, trust weight on x'

    for call in fixed_attack:
        assert call["model"] is student and isinstance(resolve_loss(call["loss"]), CrossEntropy)


def test_iad_separate_introspection_weight(fixed_attack):
    method = methods.create("iad", teacher=Linear(W_T), alpha_intro=2.5, warmup_epochs=0, eps=0.1)
    out = method.compute(Linear(W_S), X, Y, INDEX)
    expected = 1.0 * kl_mean(W_T, X, W_S, X_ADV) + 2.5 * iad_introspection(0.1)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert method.options.alpha_intro == 2.5 and method.options.introspection_weight == 2.5


def test_iad_defaults_follow_the_official_script():
    options = methods.create("iad", teacher=Linear(W_T), alpha=0.6).options
    assert options.tau == 1.0 and options.beta == 0.1 and options.warmup_epochs == 60
    assert options.alpha_intro is None and options.introspection_weight == 0.6  # the same alpha as the teacher term


def test_iad_introspection_gradient_reaches_the_clean_student_output(fixed_attack):
    """Official IAD-I does not detach p_S(x) in KL(p_S(x) || p_S(x')); neither do we."""
    method = methods.create("iad", teacher=Linear(W_T), warmup_epochs=0, eps=0.1)
    student = Linear(W_S)
    clean_logits = []

    def keep(module, inputs, output):
        if torch.equal(inputs[0], X):
            output.retain_grad()
            clean_logits.append(output)

    student.register_forward_hook(keep)
    method.compute(student, X, Y, INDEX)["loss"].backward()
    assert len(clean_logits) == 1 and clean_logits[0].grad is not None
    assert clean_logits[0].grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- rslad


def test_rslad_formula(fixed_attack):
    student, teacher = Linear(W_S), Linear(W_T)
    method = methods.create("rslad", teacher=teacher, eps=0.1)
    out = method.compute(student, X, Y, INDEX)
    expected = 5 / 6 * kl_mean(W_T, X, W_S, X_ADV) + 1 / 6 * kl_mean(W_T, X, W_S, X)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)
    call = only_call(fixed_attack, student)
    assert isinstance(call["loss"], KLToSoftLabels)
    by_hand = torch.tensor([softmax(logits(W_T, X[i])) for i in range(len(Y))])
    assert torch.allclose(call["loss"].probs, by_hand, atol=1e-6)  # the teacher's clean soft labels
    assert not call["loss"].probs.requires_grad
    assert resolve_start(call["random_start"]) == "normal"
    assert same_inputs(teacher.inputs, [X])  # soft labels computed once per batch


def test_rslad_weights_are_options(fixed_attack):
    student = Linear(W_S)
    method = methods.create("rslad", teacher=Linear(W_T), lambda_adv=2.0, lambda_nat=0.0, eps=0.1)
    out = method.compute(student, X, Y, INDEX)
    assert out["loss"].item() == pytest.approx(2.0 * kl_mean(W_T, X, W_S, X_ADV), rel=1e-6, abs=1e-6)
    assert same_inputs(student.inputs, [X_ADV])  # no clean pass for a zero weight


# ------------------------------------------------------------------------------------------- adaad


def test_adaad_default_uses_only_the_adversarial_point(fixed_attack):
    student, teacher = Linear(W_S), Linear(W_T)
    method = methods.create("adaad", teacher=teacher, eps=0.1)
    out = method.compute(student, X, Y, INDEX)
    assert out["loss"].item() == pytest.approx(kl_mean(W_T, X_ADV, W_S, X_ADV), rel=1e-6, abs=1e-6)
    call = only_call(fixed_attack, student)
    assert isinstance(call["loss"], KLToModel) and call["loss"].reference is teacher
    assert resolve_start(call["random_start"]) == "normal"
    # alpha = 1: no forward pass on the clean input, by either network
    assert same_inputs(student.inputs, [X_ADV]) and same_inputs(teacher.inputs, [X_ADV])


def test_adaad_mixed_formula(fixed_attack):
    method = methods.create("adaad", teacher=Linear(W_T), alpha=0.25, eps=0.1)
    out = method.compute(Linear(W_S), X, Y, INDEX)
    expected = 0.25 * kl_mean(W_T, X_ADV, W_S, X_ADV) + 0.75 * kl_mean(W_T, X, W_S, X)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_adaad_inner_loss_queries_the_teacher_at_the_moving_point():
    """The real KLToModel the method builds: its value at a point u uses the teacher at u."""
    captured = {}

    def recorder(self, model, *, loss="ce", random_start=True, **kwargs):
        captured["loss"] = loss
        return lambda x, y, **kw: X_ADV.clone()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AttackSettings, "pgd", recorder)
        methods.create("adaad", teacher=Linear(W_T), eps=0.1).compute(Linear(W_S), X, Y, INDEX)
    u = torch.tensor([[[[0.1, 0.7], [0.4, 0.2]]], [[[0.5, 0.5], [0.9, 0.0]]]])
    value = captured["loss"](Linear(W_S), u, Y)
    by_hand = [kl(softmax(logits(W_T, u[i])), softmax(logits(W_S, u[i]))) for i in range(2)]
    assert value.tolist() == pytest.approx(by_hand, abs=1e-6)


# ------------------------------------------------------------------------------------------- mtard


def mtard_method(**options):
    teacher, natural = Linear(W_T), Linear(W_N)
    method = methods.create("mtard", teacher=teacher, natural_teacher=natural, eps=0.1, **options)
    return method, teacher, natural


def test_mtard_first_step_formula(fixed_attack):
    method, teacher, natural = mtard_method()
    student = Linear(W_S)
    out = method.compute(student, X, Y, INDEX)
    loss_adv = kl_mean(W_T, X_ADV, W_S, X_ADV)  # robust teacher on x'
    loss_nat = kl_mean(W_N, X, W_S, X)  # natural teacher on x
    # first step: the initial losses are this step's, both relative losses are 1, the weights stay 1/2
    assert out["loss"].item() == pytest.approx(0.5 * loss_adv + 0.5 * loss_nat, rel=1e-6, abs=1e-6)
    assert method.init_loss_adv.item() == pytest.approx(loss_adv, abs=1e-6)
    assert method.init_loss_nat.item() == pytest.approx(loss_nat, abs=1e-6)
    assert method.weight_adv.item() == pytest.approx(0.5) and method.weight_nat.item() == pytest.approx(0.5)
    call = only_call(fixed_attack, student)
    assert isinstance(resolve_loss(call["loss"]), CrossEntropy)
    assert resolve_start(call["random_start"]) == "normal"
    assert same_inputs(teacher.inputs, [X_ADV]) and same_inputs(natural.inputs, [X])


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_mtard_weight_update_by_hand(fixed_attack, exponent):
    method, _, _ = mtard_method(weight_lr=0.1, rate_exponent=exponent)
    loss_adv = kl_mean(W_T, X_ADV, W_S, X_ADV)
    loss_nat = kl_mean(W_N, X, W_S, X)
    # pretend training started where the adversarial loss was twice today's and the natural one the same:
    # the adversarial loss has fallen faster (r_adv = 1/2 < r_nat = 1), so the natural branch gains weight
    with torch.no_grad():
        method.init_loss_adv.fill_(2 * loss_adv)
        method.init_loss_nat.fill_(loss_nat)
    out = method.compute(Linear(W_S), X, Y, INDEX)
    r_adv, r_nat = 0.5**exponent, 1.0**exponent
    w_nat = 0.5 - 0.1 * (0.5 - r_nat / (r_adv + r_nat))
    assert w_nat > 0.5
    assert method.weight_nat.item() == pytest.approx(w_nat, abs=1e-6)
    assert method.weight_adv.item() == pytest.approx(1 - w_nat, abs=1e-6)
    assert out["loss"].item() == pytest.approx((1 - w_nat) * loss_adv + w_nat * loss_nat, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(("better", "gains"), [("adv", "nat"), ("nat", "adv")])
def test_mtard_weight_moves_to_the_branch_that_falls_slower(fixed_attack, better, gains):
    method, _, _ = mtard_method()
    method.compute(Linear(W_S), X, Y, INDEX)  # records the initial losses
    # a student equal to one teacher drives that branch's loss to 0 (relative loss 0), the other's stays > 0
    student = Linear(W_T if better == "adv" else W_N)
    out = method.compute(student, X, Y, INDEX)
    assert out[f"kl_{better}"].item() == pytest.approx(0.0, abs=1e-6)
    # target share of the slower branch is 1: its weight moves from 1/2 by weight_lr · 1/2
    assert getattr(method, f"weight_{gains}").item() == pytest.approx(0.5 + 0.025 * 0.5, abs=1e-6)
    assert getattr(method, f"weight_{better}").item() == pytest.approx(0.5 - 0.025 * 0.5, abs=1e-6)


def test_mtard_weight_lr_decays_at_milestones(fixed_attack):
    method, _, _ = mtard_method(weight_lr=0.2, weight_lr_milestones=[3, 1], weight_lr_decay=0.5)
    assert method.options.weight_lr_milestones == (1, 3) and method.options.to_dict()["weight_lr_milestones"] == [1, 3]
    lrs = []
    for epoch in range(5):
        method.on_epoch_start(epoch)
        lrs.append(method.current_weight_lr())
    assert lrs == pytest.approx([0.2, 0.1, 0.1, 0.05, 0.05])


def test_mtard_weights_do_not_move_in_eval_mode(fixed_attack):
    method, _, _ = mtard_method()
    method.eval()
    method.compute(Linear(W_S), X, Y, INDEX)
    assert math.isnan(method.init_loss_adv.item()) and method.weight_nat.item() == 0.5


def test_mtard_state_is_in_the_checkpoint(fixed_attack):
    method, _, _ = mtard_method(weight_lr=0.3)
    method.compute(Linear(W_S), X, Y, INDEX)
    method.compute(Linear(W_T), X, Y, INDEX)
    state = method.state_dict()
    assert {"weight_adv", "weight_nat", "init_loss_adv", "init_loss_nat"} <= set(state)
    restored, _, _ = mtard_method(weight_lr=0.3)
    restored.load_state_dict(state)
    for key in ("weight_adv", "weight_nat", "init_loss_adv", "init_loss_nat"):
        assert torch.equal(getattr(restored, key), getattr(method, key))
    assert restored.weight_nat.item() != 0.5
    assert set(restored.diagnostics()) == {"mtard_weight_adv", "mtard_weight_nat"}


def test_mtard_needs_both_teachers():
    with pytest.raises(ConfigError, match="natural teacher"):
        methods.create("mtard", teacher=Linear(W_T))
    assert methods.method_class("mtard").needs_natural_teacher


# ------------------------------------------------------------------------- all methods: real attack


def tiny_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


SMOKE = {
    "kd": {},
    "ard": {"alpha": 0.5, "tau": 4.0},
    "iad": {"warmup_epochs": 0, "alpha": 0.5},
    "rslad": {},
    "adaad": {"alpha": 0.5},
    "mtard": {},
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_real_attack_smoke_and_frozen_teachers(name):
    teacher, natural = tiny_cnn(1), tiny_cnn(2)
    teacher.train()  # the method must put (and keep) its teachers in eval mode
    kwargs = {"teacher": teacher, **SMOKE[name]}
    if name == "mtard":
        kwargs["natural_teacher"] = natural
    if name != "kd":
        kwargs.update(eps=8 / 255, steps=2)
    method = methods.create(name, **kwargs)
    student = tiny_cnn(0)
    method.train()
    student.train()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=generator)
    y = torch.tensor([0, 1, 2, 1])

    out = method.compute(student, x, y, torch.arange(4))
    out["loss"].backward()

    assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    for key, value in out.items():
        if key != "loss":
            assert value.dim() == 0 and not value.requires_grad, key
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert student.training and all(m.training for m in student.modules())  # attack restored the mode
    assert all(p.requires_grad for p in student.parameters())
    assert len(method.teachers()) == (2 if name == "mtard" else 1)
    for frozen in method.teachers():
        assert not any(m.training for m in frozen.modules())
        assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
        assert all(frozen is not m for m in method.modules())  # teachers are outside the module tree
    assert not any(k.startswith(("teacher", "_teachers")) for k in method.state_dict())


# ---------------------------------------------------------------------------------- option checking


def with_teachers(name: str, **options):
    kwargs = {"teacher": Linear(W_T), **options}
    if name == "mtard":
        kwargs["natural_teacher"] = Linear(W_N)
    return methods.create(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("kd", {"tau": 0}),
        ("kd", {"tau": float("nan")}),
        ("kd", {"alpha": 1.5}),
        ("kd", {"alpha": -0.1}),
        ("kd", {"alpha": "half"}),
        ("ard", {"tau": -1.0}),
        ("ard", {"alpha": 2}),
        ("ard", {"eps": 0}),
        ("ard", {"steps": 0}),
        ("iad", {"beta": -1}),
        ("iad", {"warmup_epochs": -1}),
        ("iad", {"warmup_epochs": 1.5}),
        ("iad", {"alpha_intro": -0.5}),
        ("iad", {"norm": "l1"}),
        ("rslad", {"lambda_adv": -1}),
        ("rslad", {"lambda_adv": 0, "lambda_nat": 0}),
        ("adaad", {"alpha": 1.01}),
        ("adaad", {"step_size": -1}),
        ("mtard", {"weight_lr": 1.5}),
        ("mtard", {"rate_exponent": 0}),
        ("mtard", {"init_weight_adv": -0.2}),
        ("mtard", {"weight_lr_milestones": "215"}),
        ("mtard", {"weight_lr_milestones": [-1]}),
        ("mtard", {"weight_lr_decay": 2}),
        ("kd", {"temperature": 4}),  # unknown option: did-you-mean error
    ],
)
def test_bad_options_are_refused(name, options):
    with pytest.raises(ConfigError):
        with_teachers(name, **options)


@pytest.mark.parametrize("name", ["kd", "ard", "iad", "rslad", "adaad"])
def test_a_teacher_is_required(name):
    with pytest.raises(ConfigError, match="teacher"):
        methods.create(name)


def test_options_round_trip():
    for name in SMOKE:
        method = with_teachers(name)
        rebuilt = with_teachers(name, **method.options.to_dict())
        assert rebuilt.options == method.options


def test_mtard_update_under_a_process_group(fixed_attack, tmp_path):
    """With torch.distributed initialised the losses are all-reduced first (one process: same result)."""
    import torch.distributed as dist

    alone, _, _ = mtard_method()
    alone.compute(Linear(W_S), X, Y, INDEX)
    alone.compute(Linear(W_T), X, Y, INDEX)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        grouped, _, _ = mtard_method()
        grouped.compute(Linear(W_S), X, Y, INDEX)
        grouped.compute(Linear(W_T), X, Y, INDEX)
    finally:
        dist.destroy_process_group()
    assert grouped.weight_nat.item() == pytest.approx(alone.weight_nat.item(), abs=1e-7)
    assert grouped.weight_nat.item() != 0.5
