"""The newer methods (igdm, saad, dgad, peeraid) equal their formulas, and peeraid resumes exactly.

Each loss is checked against a value computed here by explicit arithmetic on fixed tensors (bias-free
linear models on 2x2 images), with the attack replaced by a recorder that returns a known x'. The
recorder also shows which model the inner maximisation attacks and with which loss. The peeraid
resume test trains tiny CNNs on digits; the command-line runs use Fashion-MNIST.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustdistill import methods, models
from robustdistill.attacks import KLToModel, KLToSoftLabels, kl_div
from robustdistill.config import RunConfig
from robustdistill.errors import ConfigError
from robustdistill.methods import AttackSettings
from robustdistill.methods.saad import CorrectedTeacherKL, renyi_entropy
from robustdistill.train import fit, read_metrics
from robustdistill.train.checkpoint import latest_valid_checkpoint, list_checkpoints
from tests.conftest import fashion_available, tiny_cnn
from tests.test_methods_baselines import W_N, W_S, W_T, Linear, ce, kl, logits, mean, softmax

X = torch.tensor([[[[0.2, 0.4], [0.6, 0.9]]], [[[0.9, 0.1], [0.3, 0.5]]], [[[0.5, 0.7], [0.1, 0.3]]]])
X_ADV = torch.tensor([[[[0.3, 0.3], [0.5, 1.0]]], [[[0.8, 0.2], [0.2, 0.6]]], [[[0.6, 0.6], [0.2, 0.2]]]])
Y = torch.tensor([2, 1, 0])
INDEX = torch.arange(3)
N = len(Y)


def x_minus(i: int) -> torch.Tensor:
    """`x − (x' − x)` for sample i, as the methods build it."""
    return X[i] - (X_ADV[i] - X[i])


def diff(a: list[float], b: list[float]) -> list[float]:
    return [u - v for u, v in zip(a, b, strict=True)]


def kl_logits(p: list[float], q: list[float], temperature: float = 1.0) -> float:
    return kl(softmax(p, temperature), softmax(q, temperature))


def igdm_term(i: int) -> float:
    """KL(softmax(T(x') − T(x − d)) || softmax(S(x') − S(x − d))) for sample i, by hand."""
    teacher = diff(logits(W_T, X_ADV[i]), logits(W_T, x_minus(i)))
    student = diff(logits(W_S, X_ADV[i]), logits(W_S, x_minus(i)))
    return kl_logits(teacher, student)


def entropy(z: list[float]) -> float:
    return -sum(p * math.log(p) for p in softmax(z))


@pytest.fixture
def fixed_attack(monkeypatch):
    """Replace the inner maximisation by one that returns X_ADV and records how it was built and called."""
    calls = []

    def fake_pgd(self, model, *, loss="ce", random_start=True, **kwargs):
        call = {"model": model, "loss": loss, "random_start": random_start, "inputs": []}
        calls.append(call)

        def attack(x, y, **kw):
            call["inputs"].append((x.clone(), y.clone()))
            return X_ADV.clone()

        return attack

    monkeypatch.setattr(AttackSettings, "pgd", fake_pgd)
    return calls


def only_call(calls: list[dict], student: nn.Module) -> dict:
    assert len(calls) == 1 and calls[0]["model"] is student
    ((x, y),) = calls[0]["inputs"]
    assert torch.equal(x, X) and torch.equal(y, Y)
    return calls[0]


# -------------------------------------------------------------------------------------------- igdm


def base_loss_by_hand(base: str) -> float:
    if base == "adaad":  # KL(p_T(x') || p_S(x'))
        return mean([kl_logits(logits(W_T, X_ADV[i]), logits(W_S, X_ADV[i])) for i in range(N)])
    if base == "ard":  # tau = 2 (base_opts), alpha = 1: tau² · KL(p_T(x; tau) || p_S(x'; tau))
        return 4 * mean([kl_logits(logits(W_T, X[i]), logits(W_S, X_ADV[i]), 2.0) for i in range(N)])
    adv = mean([kl_logits(logits(W_T, X[i]), logits(W_S, X_ADV[i])) for i in range(N)])  # rslad
    nat = mean([kl_logits(logits(W_T, X[i]), logits(W_S, X[i])) for i in range(N)])
    return 5 / 6 * adv + 1 / 6 * nat


@pytest.mark.parametrize("base", ["adaad", "ard", "rslad"])
def test_igdm_adds_the_ramped_logit_difference_term_to_its_base(fixed_attack, base):
    options = {"base_opts": {"tau": 2.0}} if base == "ard" else {}
    student = Linear(W_S)
    method = methods.create("igdm", teacher=Linear(W_T), base=base, alpha=3.0, ramp_epochs=10, **options)
    method.on_epoch_start(4)  # fifth epoch: weight 3 · 5 / 10
    out = method.compute(student, X, Y, INDEX)
    only_call(fixed_attack, student)
    expected_igdm = mean([igdm_term(i) for i in range(N)])
    assert out["kl_igdm"].item() == pytest.approx(expected_igdm, abs=1e-6)
    assert out["loss"].item() == pytest.approx(base_loss_by_hand(base) + 1.5 * expected_igdm, abs=1e-6)
    assert method.diagnostics() == {"igdm_weight": pytest.approx(1.5)}
    assert torch.equal(student.inputs[-1], X - (X_ADV - X))  # the student's x − d pass is the last one


def test_igdm_ramp_and_base_attack(fixed_attack):
    method = methods.create("igdm", teacher=Linear(W_T))
    options = method.options
    assert options.alpha == 1.0 and options.ramp_epochs == 200 and options.base == "adaad"
    assert options.base_opts == {"alpha": 1.0}  # the base's own options, resolved
    method.on_epoch_start(0)
    assert method.weight == pytest.approx(1 / 200)
    method.on_epoch_start(199)
    assert method.weight == pytest.approx(1.0) and method.base.epoch == 199
    method.compute(Linear(W_S), X, Y, INDEX)
    assert isinstance(fixed_attack[0]["loss"], KLToModel)  # adaad's attack: teacher at the moving point


# -------------------------------------------------------------------------------------------- saad


@pytest.mark.parametrize("order", [1.0, 2.0])
def test_renyi_entropy_by_hand(order):
    z = [0.3, -1.2, 2.0]
    p = softmax(z)
    expected = entropy(z) if order == 1 else math.log(sum(v**order for v in p)) / (1 - order)
    assert renyi_entropy(torch.tensor([z]), order).item() == pytest.approx(expected, abs=1e-6)


def test_saad_inner_loss_is_the_kl_to_the_first_order_teacher():
    """For a linear teacher the correction is exact on the true class: T̃(u)_y = T(u)_y, others stay T(x)."""
    teacher, student = Linear(W_T), Linear(W_S)
    saad = methods.create("saad", teacher=teacher, lambda_inner=0.5)
    teacher_clean, gradient = saad.teacher_logits_and_gradient(X, Y)
    for i in range(N):
        assert gradient[i].flatten().tolist() == pytest.approx(W_T[int(Y[i])])
    inner = CorrectedTeacherKL(X, Y, teacher_clean, gradient, 0.5)
    value = inner(student, X_ADV, Y)
    for i in range(N):
        corrected = logits(W_T, X[i])
        y = int(Y[i])
        corrected[y] = corrected[y] + 0.5 * (logits(W_T, X_ADV[i])[y] - logits(W_T, X[i])[y])
        assert value[i].item() == pytest.approx(kl_logits(corrected, logits(W_S, X_ADV[i])), abs=1e-6)
    u = X_ADV.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(inner(student, u, Y).sum(), u)
    student_only = KLToSoftLabels(torch.softmax(inner.corrected_logits(X_ADV), dim=1))
    u2 = X_ADV.clone().requires_grad_(True)
    (grad_student_only,) = torch.autograd.grad(student_only(student, u2, Y).sum(), u2)
    assert not torch.allclose(grad, grad_student_only)  # the gradient also flows through the correction


@pytest.mark.parametrize(("beta", "order"), [(0.0, 1.0), (0.5, 1.0), (0.5, 2.0)])
def test_saad_formula(fixed_attack, beta, order):
    student = Linear(W_S)
    method = methods.create("saad", teacher=Linear(W_T), beta=beta, entropy_order=order, alpha=2.0, ramp_epochs=4)
    method.on_epoch_start(1)  # IGDM weight 2 · 2 / 4 = 1
    out = method.compute(student, X, Y, INDEX)
    call = only_call(fixed_attack, student)
    assert isinstance(call["loss"], CorrectedTeacherKL) and call["random_start"] == "normal"

    def h(z):
        return entropy(z) if order == 1 else math.log(sum(p**order for p in softmax(z))) / (1 - order)

    heights = [h(logits(W_T, X_ADV[i])) for i in range(N)]
    w = [5 * (v - min(heights)) for v in heights]
    v = [(wi - min(w)) / (max(w) - min(w) + 1e-8) for wi in w]
    per_sample = []
    for i in range(N):
        kl_adv = kl_logits(logits(W_T, X_ADV[i]), logits(W_S, X_ADV[i]))
        kl_nat = kl_logits(logits(W_T, X[i]), logits(W_S, X[i]))
        per_sample.append(w[i] * (kl_adv + 1.0 * igdm_term(i)) + beta * (1 - v[i]) * kl_nat)
    assert out["loss"].item() == pytest.approx(mean(per_sample), abs=1e-6)
    assert ("kl_nat" in out) == (beta > 0)
    assert len(student.inputs) == (3 if beta > 0 else 2)  # x', x − d, and x only when beta > 0


def test_saad_defaults_follow_the_official_script():
    method = methods.create("saad", teacher=Linear(W_T))
    assert method.options.to_dict() == {
        "lambda_inner": 1.0,
        "entropy_scale": 5.0,
        "entropy_order": 1.0,
        "alpha": 1.0,
        "ramp_epochs": 200,
        "beta": 0.0,
        "eps": pytest.approx(8 / 255),
        "step_size": None,
        "steps": 10,
        "norm": "linf",
        "reuse_steps": 0,
    }
    assert method.attack.step_size == pytest.approx(2 / 255)


# -------------------------------------------------------------------------------------------- dgad


def swap(z: list[float], a: int, b: int) -> list[float]:
    z = list(z)
    z[a], z[b] = z[b], z[a]
    return z


def test_dgad_partitions_swaps_and_regularises_by_hand(fixed_attack):
    student = Linear(W_S)
    method = methods.create("dgad", teacher=Linear(W_T), beta=0.7)
    out = method.compute(student, X, Y, INDEX)
    call = only_call(fixed_attack, student)
    assert isinstance(call["loss"], KLToModel) and call["random_start"] == "normal"
    terms, standard = [], 0
    for i in range(N):
        y = int(Y[i])
        clean = logits(W_T, X[i])
        top = max(range(3), key=lambda c: clean[c])
        if top != y:  # standard-training subset: distilled on x from the swapped teacher
            standard += 1
            terms.append(kl_logits(swap(clean, y, top), logits(W_S, X[i])))
        else:  # adversarial subset: distilled on x', swapped where the teacher is fooled there
            adv = logits(W_T, X_ADV[i])
            runner = max((c for c in range(3) if c != y), key=lambda c: adv[c])
            target = swap(adv, y, runner) if adv[y] < adv[runner] else adv
            terms.append(kl_logits(target, logits(W_S, X_ADV[i])))
    consistency = mean(
        [
            (pa - pc) ** 2
            for i in range(N)
            for pa, pc in zip(softmax(logits(W_S, X_ADV[i])), softmax(logits(W_S, X[i])), strict=True)
        ]
    )
    assert standard == 1  # the fixture holds one sample of each case: wrong on x, fooled on x', right on both
    assert out["standard_fraction"].item() == pytest.approx(1 / 3)
    assert out["consistency"].item() == pytest.approx(consistency, abs=1e-6)
    assert out["loss"].item() == pytest.approx(mean(terms) + 0.7 * consistency, abs=1e-6)


def test_dgad_swaps_only_where_it_must():
    from robustdistill.methods.dgad import corrected_adversarial, corrected_clean

    z = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 2])
    target, wrong = corrected_clean(z, y)
    assert wrong.tolist() == [False, True]
    assert target.tolist() == [[3.0, 1.0, 2.0], [0.0, 1.0, 5.0]]
    assert corrected_adversarial(z, y).tolist() == [[3.0, 1.0, 2.0], [0.0, 1.0, 5.0]]


# ----------------------------------------------------------------------------------------- peeraid


def peeraid_with_linear_peer(**options) -> methods.Method:
    spec = models.create("smallcnn", num_classes=3, in_channels=1, width=0.25, hidden=8).spec
    method = methods.create("peeraid", student_spec=spec, **options)
    method.peer = Linear(W_N)
    return method


def test_peeraid_formula(fixed_attack):
    student = Linear(W_S)
    method = peeraid_with_linear_peer(lamb1=0.5)
    method.train()
    out = method.compute(student, X, Y, INDEX)
    call = only_call(fixed_attack, student)
    assert isinstance(call["loss"], KLToSoftLabels) and call["random_start"] == "normal"
    expected_labels = torch.tensor([softmax(logits(W_N, X[i])) for i in range(N)])
    assert torch.allclose(call["loss"].probs, expected_labels, atol=1e-6)
    assert method.peer.training  # back in train() after its clean soft labels were taken in eval()
    c, tau = 1 / 3, 5.0
    peer_ce = mean([ce(logits(W_N, X_ADV[i]), int(Y[i])) for i in range(N)])
    peer_kl = mean([kl_logits(logits(W_S, X_ADV[i]), logits(W_N, X_ADV[i])) for i in range(N)])
    loss_peer = peer_ce + 0.1 * c * peer_kl
    student_ce = mean([ce(logits(W_S, X_ADV[i]), int(Y[i])) for i in range(N)])
    student_kl = mean([kl_logits(logits(W_N, X_ADV[i]), logits(W_S, X_ADV[i]), tau) for i in range(N)])
    consistency = mean([kl_logits(logits(W_S, X[i]), logits(W_S, X_ADV[i]), tau) for i in range(N)])
    loss_student = 0.5 * student_ce + tau**2 * c * (student_kl + consistency)
    assert out["loss_peer"].item() == pytest.approx(loss_peer, abs=1e-6)
    assert out["loss_student"].item() == pytest.approx(loss_student, abs=1e-6)
    assert out["loss"].item() == pytest.approx(loss_peer + loss_student, abs=1e-6)


def test_peeraid_each_network_gets_the_gradient_of_its_own_loss(fixed_attack):
    student = Linear(W_S)
    method = peeraid_with_linear_peer(class_mean_kl=False)
    out = method.compute(student, X, Y, INDEX)
    out["loss"].backward()
    s_adv = student.layer(X_ADV.flatten(1))
    p_adv = method.peer.layer(X_ADV.flatten(1))
    s_clean = student.layer(X.flatten(1))
    loss_peer = nn.functional.cross_entropy(p_adv, Y) + 0.1 * kl_div(s_adv.detach(), p_adv).mean()
    (peer_grad,) = torch.autograd.grad(loss_peer, method.peer.layer.weight)
    loss_student = 25 * (kl_div(p_adv.detach(), s_adv, 5.0).mean() + kl_div(s_clean, s_adv, 5.0).mean())
    (student_grad,) = torch.autograd.grad(loss_student, student.layer.weight)
    assert torch.allclose(method.peer.layer.weight.grad, peer_grad, atol=1e-6)
    assert torch.allclose(student.layer.weight.grad, student_grad, atol=1e-6)


def test_peeraid_builds_its_peer_from_the_student_spec():
    student = models.create("smallcnn", num_classes=4, in_channels=1, width=0.25, hidden=8, mean=[0.5], std=[0.2])
    method = methods.create("peeraid", student_spec=student.spec)
    assert method.peer.spec == student.spec and method.peer is not student
    other = methods.create("peeraid", student_spec=student.spec, peer="preact-resnet-18", peer_opts={"width": 0.125})
    assert other.peer.spec["arch"] == "preact-resnet-18" and other.peer.spec["kwargs"] == {"width": 0.125}
    assert other.peer.spec["num_classes"] == 4 and other.peer.spec["mean"] == pytest.approx([0.5])
    assert not any(key.startswith("peer") for key in methods.create("dgad", teacher=Linear(W_T)).state_dict())
    assert any(key.startswith("peer.") for key in method.state_dict())
    with pytest.raises(ConfigError, match="student_spec"):
        methods.create("peeraid")


RESUME = dict(
    epochs=2, batch_size=32, lr=0.05, eps=0.1, steps=2, seed=5, deterministic=True, eval_every=0, log_every=2,
    checkpoint_every=3, data="digits",
)  # fmt: skip


def peeraid_run(run_dir, train, *, resume=False):
    cfg = RunConfig(**RESUME, method="peeraid")
    student = tiny_cnn(seed=1)
    torch.manual_seed(2)
    method = methods.create("peeraid", student_spec=student.spec, eps=0.1, steps=2)
    fit(student, method, train, config=cfg, run_dir=run_dir, resume=resume, progress=False)
    return student, method


def test_peeraid_resume_is_bit_identical_for_student_and_peer(tmp_path, digits_train, monkeypatch):
    train = digits_train
    reference_student, reference_method = peeraid_run(tmp_path / "a", train)

    cls = methods.method_class("peeraid")
    original = cls.compute
    calls = {"n": 0}

    def crash_at_step_14(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 14:  # mid second epoch, two steps after a checkpoint
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "compute", crash_at_step_14)
    with pytest.raises(KeyboardInterrupt):
        peeraid_run(tmp_path / "b", train)
    monkeypatch.setattr(cls, "compute", original)
    _, state = latest_valid_checkpoint(tmp_path / "b" / "checkpoints")
    assert state["global_step"] == 12 and any(key.startswith("peer.") for key in state["method"])
    n_params = len(list(reference_student.parameters())) + len(list(reference_method.peer.parameters()))
    assert len(state["optimizer"]["state"]) == n_params  # the peer's momentum buffers are in the optimiser
    resumed_student, resumed_method = peeraid_run(tmp_path / "b", train, resume=True)
    for name, a in reference_student.state_dict().items():
        assert torch.equal(a, resumed_student.state_dict()[name]), f"student {name}"
    for name, a in reference_method.peer.state_dict().items():
        assert torch.equal(a, resumed_method.peer.state_dict()[name]), f"peer {name}"
    assert list_checkpoints(tmp_path / "b" / "checkpoints")
    losses_a = [r["train_loss"] for r in read_metrics(tmp_path / "a")]
    losses_b = [r["train_loss"] for r in read_metrics(tmp_path / "b")]
    assert losses_a == pytest.approx(losses_b, abs=1e-6)


# --------------------------------------------------------------------------------- option checking


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("igdm", {"base": "kd"}),
        ("igdm", {"alpha": -1}),
        ("igdm", {"ramp_epochs": 0}),
        ("igdm", {"base_opts": "tau=1"}),
        ("igdm", {"base_opts": {"eps": 0.1}}),
        ("igdm", {"base": "ard", "base_opts": {"temperature": 1}}),
        ("saad", {"entropy_scale": 0}),
        ("saad", {"entropy_order": 0}),
        ("saad", {"beta": -0.1}),
        ("saad", {"ramp_epochs": 1.5}),
        ("dgad", {"beta": -1}),
        ("dgad", {"steps": 0}),
    ],
)
def test_bad_options_are_refused(name, options):
    with pytest.raises(ConfigError):
        methods.create(name, teacher=Linear(W_T), **options)


def test_bad_peeraid_options_are_refused():
    spec = models.create("smallcnn", num_classes=3, in_channels=1, width=0.25, hidden=8).spec
    for options in ({"tau": 0}, {"gamma2": -1}, {"class_mean_kl": "yes"}, {"peer_opts": [1]}, {"peer": "resnet-81"}):
        with pytest.raises(ConfigError):
            methods.create("peeraid", student_spec=spec, **options)


@pytest.mark.parametrize("name", ["igdm", "saad", "dgad", "peeraid"])
def test_options_round_trip(name):
    spec = models.create("smallcnn", num_classes=3, in_channels=1, width=0.25, hidden=8).spec
    kwargs = {"student_spec": spec} if name == "peeraid" else {"teacher": Linear(W_T)}
    method = methods.create(name, **kwargs)
    assert methods.create(name, **{**kwargs, **method.options.to_dict()}).options == method.options


# ------------------------------------------------------------------------------------ command line

TINY = [
    "--data", "fashion-mnist", "--subset", "100", "--test-subset", "50", "--batch-size", "50", "--epochs", "1",
    "--steps", "1", "--model", "smallcnn", "model_opts.width=0.25", "model_opts.hidden=16", "eval_n=50",
    "eval_attacks=[clean]", "--quiet",
]  # fmt: skip


@pytest.mark.skipif(not fashion_available(), reason="needs the Debian package dataset-fashion-mnist")
@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("igdm", ["--method-opt", "base=rslad"]),
        ("igdm", ["--method-opt", "base=ard", "--method-opt", "base_opts={tau: 1.0}"]),
        ("saad", ["--method-opt", "beta=1.0"]),
        ("dgad", []),
        ("peeraid", []),
    ],
)
def test_distill_runs_each_new_method_on_fashion_mnist(method, options, tmp_path):
    from tests.clirun import main_exit_code

    args = ["distill", *TINY, "--method", method, *options, "--run-dir", str(tmp_path / "run")]
    if methods.method_class(method).needs_teacher:
        teacher = models.create("smallcnn", num_classes=10, in_channels=1, width=0.25, hidden=16)
        models.save(teacher, tmp_path / "teacher.safetensors")
        args += ["--teacher", str(tmp_path / "teacher.safetensors")]
    assert main_exit_code(args) == 0
    record = read_metrics(tmp_path / "run")[-1]
    losses = {k: v for k, v in record.items() if k.startswith("train_")}
    assert "train_loss" in losses and all(math.isfinite(v) for v in losses.values()), losses
    student = models.load(tmp_path / "run" / "model.safetensors")
    assert student.spec["num_classes"] == 10
    if method == "peeraid":
        _, state = latest_valid_checkpoint(tmp_path / "run" / "checkpoints")
        assert any(key.startswith("peer.") for key in state["method"])
