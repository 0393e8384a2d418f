"""Method `paths` (alias `dong2024`): distillation along untargeted and targeted adversarial paths.

The formula tests replace the PGD run by a fake that returns a known path and compare the loss with
explicit arithmetic on bias-free linear models; the behaviour tests run the real attack engine on
two small MLPs trained for a moment on sklearn's 8x8 digits.
"""

import itertools
import json
import math

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from robustdistill import methods
from robustdistill.attacks import PGD, distance, kl_div, shared_random_starts
from robustdistill.errors import ConfigError
from robustdistill.methods import paths as paths_module
from robustdistill.methods.paths import AdversarialPaths
from robustdistill.methods.paths_branches import choose_targets, train_mode_dependent
from robustdistill.methods.paths_steps import parse_aligned_steps, path_weights

# ---------------------------------------------------------------------------------------------- fixtures

X = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]], [[[0.9, 0.1], [0.3, 0.5]]]])
Y = torch.tensor([0, 2])
W_S = [[1.0, -1.0, 0.5, 0.0], [0.0, 2.0, -1.0, 1.0], [-1.0, 0.5, 1.0, -0.5]]  # student
W_T = [[0.5, 0.5, -1.0, 1.0], [1.5, -0.5, 0.0, 0.5], [-0.5, 1.0, 1.0, -1.0]]  # teacher


class Linear(nn.Module):
    """A bias-free linear classifier on flattened 2x2 images that records the inputs it sees."""

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


def softmax(z: list[float]) -> list[float]:
    exps = [math.exp(v) for v in z]
    return [e / sum(exps) for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True))


def kl_ts(image: torch.Tensor) -> float:
    """KL(p_T(z) || p_S(z)) of the two linear models at one image, by hand."""
    return kl(softmax(logits(W_T, image)), softmax(logits(W_S, image)))


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def known_path(steps: int, rows: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((steps, rows, 1, 2, 2), generator=generator).mul(100).round().div(100)


def pgd_call(attack: PGD, x: torch.Tensor, labels: torch.Tensor) -> dict:
    """What one call of the PGD engine was asked: its settings, inputs, labels and each row's direction."""
    return {
        "model": attack.model,
        "x": x.clone(),
        "labels": labels.clone(),
        "sign": attack.loss.sign.clone(),  # the paths objective's per-row sign (+1 ascend, -1 descend)
        "eps": attack.eps,
        "step_size": attack.step_size,
        "steps": attack.steps,
        "norm": attack.norm,
        "random_start": attack.random_start,
        "record_path": attack.record_path,
    }


@pytest.fixture
def fake_path(monkeypatch):
    """Replace the PGD engine's call by one returning `state["path"]`."""
    state: dict = {"calls": []}

    def fake(attack, x, labels, **kwargs):
        state["calls"].append(pgd_call(attack, x, labels))
        path = state["path"]
        assert path.shape[1] == x.shape[0]
        return path.clone()

    monkeypatch.setattr(PGD, "__call__", fake)
    return state


def mlp(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is faster than several on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.tensor(data.images[:600], dtype=torch.float32).div(16).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(data.target[:600], dtype=torch.long)
    return x, y


@pytest.fixture(scope="module")
def models(digits):
    """A teacher and a smaller student, each trained for a moment (full batch Adam) on the digits."""
    x, y = digits
    torch.manual_seed(0)
    trained = []
    for hidden, steps in ((64, 60), (24, 50)):
        model = mlp(hidden)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        model.zero_grad(set_to_none=True)
        model.eval()
        trained.append(model)
    teacher, student = trained
    assert (teacher(x).argmax(1) == y).float().mean() > 0.9
    assert (student(x).argmax(1) == y).float().mean() > 0.85
    return teacher, student


def batch(digits, n: int = 32, offset: int = 0):
    x, y = digits
    return x[offset : offset + n], y[offset : offset + n]


# ---------------------------------------------------------------------------------------------- registry


def test_registered_under_name_and_alias():
    teacher = Linear(W_T)
    method = methods.create("dong2024", teacher=teacher, eps=0.1, steps=3)
    assert isinstance(method, AdversarialPaths) and method.name == "paths"
    assert isinstance(methods.create("paths", teacher=teacher, eps=0.1), AdversarialPaths)
    with pytest.raises(ConfigError, match="teacher"):
        methods.create("paths", eps=0.1)
    assert set(methods.spec("paths").options.keys()) == {
        "inner_loss", "target", "aligned_steps", "weighting", "gamma", "rho", "lambda_nat", "lambda_u",
        "lambda_t", "branches", "chunk_size", "sample_steps", "share_forward", "eps", "step_size", "steps", "norm",
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- paths


def test_both_branches_run_as_one_pgd_batch(digits, models, monkeypatch):
    teacher, student = models
    x, y = batch(digits, 8)
    calls = []
    real = PGD.__call__

    def spy(attack, xx, labels, **kwargs):
        calls.append(pgd_call(attack, xx, labels))
        return real(attack, xx, labels, **kwargs)

    monkeypatch.setattr(PGD, "__call__", spy)
    method = methods.create("paths", teacher=teacher, target="teacher-runner-up", eps=0.1, step_size=0.02, steps=4)
    method.compute(student, x, y, torch.arange(8))
    assert len(calls) == 1
    call = calls[0]
    assert call["model"] is student and call["x"].shape == (16, 1, 8, 8)
    assert torch.equal(call["x"][:8], x) and torch.equal(call["x"][8:], x)
    assert torch.equal(call["labels"][:8], y)
    runner_up = teacher(x).detach().masked_fill(nn.functional.one_hot(y, 10).bool(), -1e9).argmax(1)
    assert torch.equal(call["labels"][8:], runner_up)
    assert call["sign"].tolist() == [1.0] * 8 + [-1.0] * 8
    assert (call["eps"], call["step_size"], call["steps"], call["norm"]) == (0.1, 0.02, 4, "linf")
    assert call["random_start"] == "uniform" and call["record_path"]

    for branches, labels, sign in (("untargeted", y, 1.0), ("targeted", runner_up, -1.0)):
        calls.clear()
        method = methods.create(
            "paths", teacher=teacher, branches=branches, target="teacher-runner-up", eps=0.1, steps=2
        )
        out = method.compute(student, x, y, torch.arange(8))
        assert len(calls) == 1 and calls[0]["x"].shape[0] == 8
        assert torch.equal(calls[0]["labels"], labels) and calls[0]["sign"].tolist() == [sign] * 8
        other = "t" if branches == "untargeted" else "u"
        assert f"path_{other}" not in out


def test_untargeted_loss_and_target_probability_rise_along_the_paths(digits, models):
    teacher, student = models
    x, y = batch(digits, 64)
    method = methods.create("paths", teacher=teacher, eps=0.1, step_size=0.02, steps=6)
    with torch.no_grad():
        teacher_clean = teacher(x)
    targets = choose_targets("teacher-runner-up", teacher_clean, y)
    torch.manual_seed(1)
    path = method.generate_paths(student, x, y, targets, teacher_clean)
    assert path.shape == (6, 128, 1, 8, 8)
    with torch.no_grad():
        ce = [nn.functional.cross_entropy(student(p[:64]), y).item() for p in path]
        prob_t = [student(p[64:]).softmax(1).gather(1, targets[:, None]).mean().item() for p in path]
        ce_clean = nn.functional.cross_entropy(student(x), y).item()
        prob_clean = student(x).softmax(1).gather(1, targets[:, None]).mean().item()
    assert all(b > a for a, b in itertools.pairwise(ce)), ce
    assert ce[-1] > ce_clean + 1.0
    assert all(b > a for a, b in itertools.pairwise(prob_t)), prob_t
    assert prob_t[-1] > prob_clean + 0.2


@pytest.mark.parametrize("inner_loss", ["kl-clean", "kl-moving"])
def test_kl_inner_losses_push_the_student_away_from_the_teacher(digits, models, inner_loss):
    teacher, student = models
    x, y = batch(digits, 32)
    method = methods.create("paths", teacher=teacher, inner_loss=inner_loss, branches="untargeted", eps=0.1, steps=5)
    with torch.no_grad():
        teacher_clean = teacher(x)
        path = method.generate_paths(student, x, y, None, teacher_clean)
        reference = (lambda u: teacher_clean) if inner_loss == "kl-clean" else teacher
        gaps = [kl_div(reference(u), student(u)).mean().item() for u in (x, path[0], path[-1])]
    assert gaps[0] < gaps[1] < gaps[2], gaps


@pytest.mark.parametrize(
    ("inner_loss", "norm", "eps"),
    [("ce", "linf", 0.1), ("kl-clean", "linf", 0.1), ("kl-moving", "linf", 0.05), ("ce", "l2", 0.8)],
)
def test_every_path_point_lies_in_the_ball_and_the_box(digits, models, inner_loss, norm, eps):
    teacher, student = models
    x, y = batch(digits, 16)  # digits are mostly exact 0s: the box constraint binds
    method = methods.create("paths", teacher=teacher, inner_loss=inner_loss, eps=eps, steps=4, norm=norm)
    with torch.no_grad():
        teacher_clean = teacher(x)
    targets = choose_targets("random", teacher_clean, y)
    path = method.generate_paths(student, x, y, targets, teacher_clean)
    assert path.shape == (4, 32, 1, 8, 8)
    for k in range(4):
        d = distance(path[k], torch.cat([x, x]), norm)
        assert (d <= eps + 1e-6).all()
        assert d.max() > eps / 4  # the path does move
    assert path.min() >= 0.0 and path.max() <= 1.0


# ---------------------------------------------------------------------------------------------- targets


def test_random_targets_are_uniform_over_the_other_classes():
    torch.manual_seed(0)
    y = torch.arange(10).repeat(90)
    targets = choose_targets("random", torch.zeros(900, 10), y)
    assert not (targets == y).any()
    for label in range(10):
        counts = torch.bincount(targets[y == label], minlength=10)
        assert counts[label] == 0 and (counts[torch.arange(10) != label] >= 2).all()
    two = choose_targets("random", torch.zeros(6, 2), torch.tensor([0, 1, 0, 1, 1, 0]))
    assert two.tolist() == [1, 0, 1, 0, 0, 1]


def test_teacher_runner_up_and_least_likely_by_hand():
    teacher_logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 2.0, 1.0], [1.0, 5.0, 0.0], [0.5, 2.0, -1.0]])
    y = torch.tensor([0, 0, 2, 2])
    # runner-up: the top class unless it is y, then the second; least-likely: the bottom class unless it is y
    assert choose_targets("teacher-runner-up", teacher_logits, y).tolist() == [2, 1, 1, 1]
    assert choose_targets("least-likely", teacher_logits, y).tolist() == [1, 2, 0, 0]
    torch.manual_seed(0)
    labels = torch.randint(0, 7, (200,))
    scores = torch.randn(200, 7)
    for rule in ("teacher-runner-up", "least-likely"):
        assert not (choose_targets(rule, scores, labels) == labels).any()


# ---------------------------------------------------------------------------------------------- weights


def test_adaptive_weights_equal_the_renormalised_product():
    torch.manual_seed(0)
    kl_values = torch.rand(4, 6) * 2
    log_r = torch.log(torch.rand(4, 6).clamp_min(0.05))
    gamma, rho = 0.7, 1.5
    product = torch.softmax(kl_values / gamma, dim=0) * log_r.exp() ** rho
    expected = product / product.sum(dim=0, keepdim=True)
    weights = path_weights(kl_values, log_r, weighting="adaptive", gamma=gamma, rho=rho)
    assert torch.allclose(weights, expected, atol=1e-6)
    assert (weights >= 0).all() and torch.allclose(weights.sum(0), torch.ones(6), atol=1e-6)
    # rho = 0: informativeness alone
    assert torch.allclose(
        path_weights(kl_values, log_r, weighting="adaptive", gamma=gamma, rho=0.0),
        torch.softmax(kl_values / gamma, dim=0),
        atol=1e-6,
    )


def test_adaptive_weights_survive_underflow_and_non_finite_values():
    kl_values = torch.tensor([[0.1, 0.2, float("nan")], [0.3, 0.1, 0.0], [0.2, 0.4, 0.0]])
    log_r = torch.tensor([[-300.0, -1.0, -1.0], [-310.0, float("-inf"), -1.0], [-305.0, -2.0, -1.0]])
    # column 0: r^rho underflows to 0 at every step in float32; the renormalised product is still defined
    product = [math.exp(kl_values[k, 0].item() + log_r[k, 0].item() + 300) for k in range(3)]
    weights = path_weights(kl_values, log_r, weighting="adaptive", gamma=1.0, rho=1.0)
    assert torch.allclose(weights[:, 0], torch.tensor([p / sum(product) for p in product]), atol=1e-6)
    assert weights[1, 1] == 0.0  # a teacher certain that y is impossible gives the point no weight
    assert torch.allclose(weights[:, 2], torch.full((3,), 1 / 3))  # NaN disagreement: uniform fallback
    assert torch.isfinite(weights).all() and torch.allclose(weights.sum(0), torch.ones(3))


def test_uniform_and_last_weights():
    kl_values = torch.rand(3, 4)
    log_r = torch.zeros(3, 4)
    assert torch.equal(path_weights(kl_values, log_r, weighting="uniform", gamma=1, rho=1), torch.full((3, 4), 1 / 3))
    last = path_weights(kl_values, log_r, weighting="last", gamma=1, rho=1)
    assert last[:2].eq(0).all() and last[2].eq(1).all()


def test_weights_inside_compute_are_a_distribution_per_sample_and_branch(digits, models, monkeypatch):
    teacher, student = models
    x, y = batch(digits, 12)
    seen = []
    real = paths_module.path_weights

    def spy(kl_values, log_r, **kwargs):
        weights = real(kl_values, log_r, **kwargs)
        seen.append((kl_values.detach().clone(), log_r.clone(), weights.clone()))
        return weights

    monkeypatch.setattr(paths_module, "path_weights", spy)
    method = methods.create("paths", teacher=teacher, eps=0.1, steps=5, gamma=0.5, rho=2.0)
    method.compute(student, x, y, torch.arange(12))
    (kl_values, log_r, weights) = seen[0]
    assert weights.shape == (5, 24) and not weights.requires_grad
    assert (weights >= 0).all() and torch.allclose(weights.sum(0), torch.ones(24), atol=1e-6)
    assert (kl_values >= -1e-6).all() and (log_r <= 0).all()
    assert weights.std() > 0  # adaptive weights are not uniform here


# ---------------------------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("branch", ["untargeted", "targeted"])
def test_last_with_one_branch_is_the_one_sample_form(fake_path, branch):
    path = known_path(3, 2)
    fake_path["path"] = path
    teacher, student = Linear(W_T), Linear(W_S)
    method = methods.create(
        "paths", teacher=teacher, branches=branch, weighting="last", lambda_nat=0.25, lambda_u=0.6, lambda_t=0.35,
        target="teacher-runner-up", eps=0.5, steps=3,
    )  # fmt: skip
    out = method.compute(student, X, Y, torch.arange(2))
    lam = 0.6 if branch == "untargeted" else 0.35
    natural = (kl_ts(X[0]) + kl_ts(X[1])) / 2
    final = (kl_ts(path[2, 0]) + kl_ts(path[2, 1])) / 2
    assert out["loss"].item() == pytest.approx(0.25 * natural + lam * final, abs=1e-6)
    assert out["kl_nat"].item() == pytest.approx(natural, abs=1e-6)
    name = "u" if branch == "untargeted" else "t"
    assert out[f"path_{name}"].item() == pytest.approx(final, abs=1e-6)
    # cost: `last` sends only the final iterate through the alignment (teacher: clean x, then u_K)
    assert len(teacher.inputs) == 2 and torch.equal(teacher.inputs[1], path[2])


def test_uniform_with_both_branches_is_the_plain_average(fake_path):
    path = known_path(2, 4, seed=1)  # rows 0-1: untargeted u_k, rows 2-3: targeted v_k
    fake_path["path"] = path
    method = methods.create(
        "paths", teacher=Linear(W_T), weighting="uniform", lambda_nat=0.2, lambda_u=0.3, lambda_t=0.5,
        eps=0.5, steps=2,
    )  # fmt: skip
    out = method.compute(Linear(W_S), X, Y, torch.arange(2))
    natural = (kl_ts(X[0]) + kl_ts(X[1])) / 2
    path_u = sum(0.5 * (kl_ts(path[0, i]) + kl_ts(path[1, i])) for i in (0, 1)) / 2
    path_t = sum(0.5 * (kl_ts(path[0, i]) + kl_ts(path[1, i])) for i in (2, 3)) / 2
    assert out["loss"].item() == pytest.approx(0.2 * natural + 0.3 * path_u + 0.5 * path_t, abs=1e-6)
    assert out["path_u"].item() == pytest.approx(path_u, abs=1e-6)
    assert out["path_t"].item() == pytest.approx(path_t, abs=1e-6)


def test_adaptive_weights_on_a_subset_of_steps_by_hand(fake_path):
    path = known_path(3, 2, seed=2)
    fake_path["path"] = path
    gamma, rho = 0.5, 2.0
    method = methods.create(
        "paths", teacher=Linear(W_T), branches="untargeted", aligned_steps="1,3", gamma=gamma, rho=rho,
        eps=0.5, steps=3,
    )  # fmt: skip
    out = method.compute(Linear(W_S), X, Y, torch.arange(2))
    per_sample = []
    for i in (0, 1):
        points = [path[0, i], path[2, i]]  # steps 1 and 3 (1-based)
        losses = [kl_ts(z) for z in points]
        reliability = [softmax(logits(W_T, z))[int(Y[i])] for z in points]
        raw = [math.exp(l_k / gamma) * r_k**rho for l_k, r_k in zip(losses, reliability, strict=True)]
        per_sample.append(sum(w / sum(raw) * l_k for w, l_k in zip(raw, losses, strict=True)))
    natural = (kl_ts(X[0]) + kl_ts(X[1])) / 2
    expected = natural / 6 + 5 / 12 * sum(per_sample) / 2
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 500])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_chunked_alignment_equals_one_batch(digits, models, chunk_size, batchnorm):
    teacher, _ = models
    x, y = batch(digits, 5, offset=100)
    torch.manual_seed(3)
    layers = [nn.Flatten(), nn.Linear(64, 16)] + ([nn.BatchNorm1d(16)] if batchnorm else []) + [nn.ReLU()]
    student = nn.Sequential(*layers, nn.Linear(16, 10))
    if batchnorm:  # chunking changes train-mode batch statistics: the equality holds in eval mode
        student(torch.rand(64, 1, 8, 8))
        student.eval()

    def run(size):
        method = methods.create("paths", teacher=teacher, eps=0.1, steps=3, chunk_size=size, inner_loss="kl-moving")
        student.zero_grad()
        torch.manual_seed(11)
        out = method.compute(student, x, y, torch.arange(5))
        out["loss"].backward()
        return out, [p.grad.clone() for p in student.parameters()]

    one, grads_one = run(0)
    chunked, grads_chunked = run(chunk_size)
    for key in one:
        assert chunked[key].item() == pytest.approx(one[key].item(), abs=1e-6), key
    for a, b in zip(grads_one, grads_chunked, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert all(p.grad is None for p in teacher.parameters())
    assert any(g.abs().sum() > 0 for g in grads_one)


def test_teacher_and_student_modes_are_kept(digits, models):
    teacher, student = models
    x, y = batch(digits, 4)
    method = methods.create("paths", teacher=teacher, eps=0.1, steps=2, inner_loss="kl-moving")
    student.train()
    try:
        method.compute(student, x, y, torch.arange(4))
        assert student.training and not teacher.training
        assert all(p.requires_grad for p in student.parameters())
        assert not any(p.requires_grad for p in teacher.parameters())
    finally:
        student.eval()


# ---------------------------------------------------------------------------------------------- diagnostics


def test_diagnostics_keys_and_values_by_hand(fake_path):
    path = known_path(2, 4, seed=4)
    fake_path["path"] = path
    teacher, student = Linear(W_T), Linear(W_S)
    method = methods.create("paths", teacher=teacher, weighting="uniform", target="teacher-runner-up", eps=0.5, steps=2)
    method.on_epoch_start(0)
    assert method.diagnostics() == {}
    for _ in range(2):  # two identical batches: the epoch means equal one batch's values
        method.compute(student, X, Y, torch.arange(2))
    diagnostics = method.diagnostics()
    json.dumps(diagnostics)
    expected_keys = {
        f"paths/{kind}_{branch}/step_{k:02d}" for kind in ("weight", "kl") for branch in "ut" for k in (1, 2)
    } | {"paths/teacher_error_u", "paths/teacher_error_t", "paths/target_success"}
    assert set(diagnostics) == expected_keys
    assert all(type(v) is float for v in diagnostics.values())

    targets = []
    for i in (0, 1):
        scores = logits(W_T, X[i])
        scores[int(Y[i])] = -math.inf
        targets.append(argmax(scores))
    for branch, rows in (("u", (0, 1)), ("t", (2, 3))):
        wrong = 0
        for k in (0, 1):
            assert diagnostics[f"paths/weight_{branch}/step_{k + 1:02d}"] == pytest.approx(0.5)
            mean_kl = sum(kl_ts(path[k, r]) for r in rows) / 2
            assert diagnostics[f"paths/kl_{branch}/step_{k + 1:02d}"] == pytest.approx(mean_kl, abs=1e-6)
            wrong += sum(argmax(logits(W_T, path[k, r])) != int(Y[r % 2]) for r in rows)
        assert diagnostics[f"paths/teacher_error_{branch}"] == pytest.approx(wrong / 4)
    success = sum(argmax(logits(W_S, path[1, 2 + i])) == targets[i] for i in (0, 1)) / 2
    assert diagnostics["paths/target_success"] == pytest.approx(success)
    assert method.diagnostics() == {}  # read once per epoch, then reset

    method.compute(student, X, Y, torch.arange(2))
    method.on_epoch_start(1)
    assert method.diagnostics() == {}


def test_diagnostics_on_real_paths_are_sane_and_stay_out_of_the_checkpoint(digits, models):
    teacher, student = models
    method = methods.create("paths", teacher=teacher, eps=0.1, steps=4, aligned_steps=[2, 4])
    method.on_epoch_start(0)
    for offset in (0, 16):
        x, y = batch(digits, 16, offset)
        method.compute(student, x, y, torch.arange(16))
    state = method.state_dict()
    diagnostics = method.diagnostics()
    assert {k for k in diagnostics if "/step_" in k} == {
        f"paths/{kind}_{b}/step_{k:02d}" for kind in ("weight", "kl") for b in "ut" for k in (2, 4)
    }
    for branch in "ut":
        total = diagnostics[f"paths/weight_{branch}/step_02"] + diagnostics[f"paths/weight_{branch}/step_04"]
        assert total == pytest.approx(1.0, abs=1e-5)
        assert diagnostics[f"paths/kl_{branch}/step_02"] >= 0
        assert 0 <= diagnostics[f"paths/teacher_error_{branch}"] <= 1
    # the untargeted path pulls away from the teacher: disagreement grows along it
    assert diagnostics["paths/kl_u/step_04"] > diagnostics["paths/kl_u/step_02"]
    assert 0 <= diagnostics["paths/target_success"] <= 1
    assert all(math.isfinite(v) for v in diagnostics.values())
    assert all(not k.startswith("_diag") for k in state)
    fresh = methods.create("paths", teacher=teacher, eps=0.1, steps=4, aligned_steps=[2, 4])
    fresh.load_state_dict(state)
    assert fresh.diagnostics() == {}


# ---------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("value", "expected"),
    [("all", (1, 2, 3, 4, 5, 6)), (" ALL ", (1, 2, 3, 4, 5, 6)), ("2,4,6", (2, 4, 6)), ("[1, 3]", (1, 3)),
     ("2 5", (2, 5)), ([1, 6], (1, 6)), ((3,), (3,)), (6, (6,))],
)  # fmt: skip
def test_aligned_steps_forms(value, expected):
    assert parse_aligned_steps(value, 6) == expected


@pytest.mark.parametrize(
    "value", [0, 7, "0,2", "2,7", "2,2", "4,2", [3, 1], "", [], "abc", "2;4", True, 2.5, [1.5], None, {"a": 1}]
)
def test_aligned_steps_rejected(value):
    with pytest.raises(ConfigError, match="aligned_steps"):
        parse_aligned_steps(value, 6)


@pytest.mark.parametrize(
    "options",
    [
        {"inner_loss": "kl"},
        {"target": "nearest"},
        {"weighting": "softmax"},
        {"branches": "none"},
        {"gamma": 0},
        {"gamma": -1.0},
        {"gamma": float("inf")},
        {"rho": -0.5},
        {"lambda_nat": -0.1},
        {"lambda_u": "x"},
        {"lambda_t": float("nan")},
        {"lambda_nat": 0, "lambda_u": 0, "branches": "untargeted"},
        {"chunk_size": -1},
        {"chunk_size": 2.5},
        {"aligned_steps": "1,11"},
        {"aligned_steps": "3", "steps": 2},
        {"eps": 0},
        {"steps": 0},
        {"norm": "l1"},
        {"lamda_u": 0.5},
    ],
)
def test_invalid_options_raise_config_error(options):
    with pytest.raises(ConfigError):
        methods.create("paths", teacher=Linear(W_T), **options)


def test_options_round_trip():
    teacher = Linear(W_T)
    method = methods.create(
        "paths", teacher=teacher, inner_loss="KL-Moving", aligned_steps="2,4", weighting="uniform", steps=4, eps=0.1
    )
    options = method.options.to_dict()
    assert options["inner_loss"] == "kl-moving" and options["aligned_steps"] == [2, 4]
    assert options["step_size"] is None and method.attack.step_size == pytest.approx(0.025)
    json.dumps(options)
    assert methods.create("paths", teacher=teacher, **options).options.to_dict() == options
    assert methods.create("paths", teacher=teacher, aligned_steps=[1, 2, 3, 4], steps=4).options.aligned_steps == "all"
    defaults = methods.create("paths", teacher=teacher).options.to_dict()
    assert defaults["aligned_steps"] == "all"
    assert defaults["lambda_nat"] == pytest.approx(1 / 6) and defaults["lambda_u"] == pytest.approx(5 / 12)
    assert (defaults["target"], defaults["weighting"], defaults["branches"]) == ("random", "adaptive", "both")
    swapped = methods.create("paths", teacher=teacher, eps=0.01, step_size=0.1, steps=3)
    with pytest.warns(UserWarning, match="swapped"):  # PGD's one check, at the attack
        swapped.compute(Linear(W_S), X, Y, torch.arange(2))


# ---------------------------------------------------------------------------------------------- cheap configurations


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sample_steps": -1}, "sample_steps.*>= 0"),
        ({"sample_steps": True}, "sample_steps.*>= 0"),
        ({"sample_steps": 1.5}, "sample_steps.*>= 0"),
        ({"sample_steps": 4, "steps": 4}, "smaller than the number of aligned steps"),
        ({"sample_steps": 2, "aligned_steps": "2,4", "steps": 4}, "smaller than the number of aligned steps"),
        ({"sample_steps": 1, "weighting": "last"}, "weighting=last"),
        ({"share_forward": "yes"}, "share_forward.*true or false"),
        ({"share_forward": True, "chunk_size": 64}, "cannot be chunked"),
    ],
)
def test_cheap_options_are_validated_with_clear_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        methods.create("paths", teacher=Linear(W_T), **options)


def test_train_mode_dependent_layers_are_detected():
    assert train_mode_dependent(mlp(8)) == []
    assert train_mode_dependent(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.0), nn.InstanceNorm1d(4))) == []
    found = train_mode_dependent(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4)))
    assert found == ["1 (Dropout)", "2 (BatchNorm1d)"]
    assert train_mode_dependent(nn.InstanceNorm2d(3, track_running_stats=True)) == ["InstanceNorm2d (InstanceNorm2d)"]


@pytest.mark.parametrize("layer", [nn.Dropout(0.3), nn.BatchNorm1d(16)])
def test_share_forward_refuses_a_student_whose_modes_differ(digits, models, layer):
    teacher, _ = models
    x, y = batch(digits, 4)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), layer, nn.ReLU(), nn.Linear(16, 10)).train()
    method = methods.create("paths", teacher=teacher, eps=0.1, steps=2, share_forward=True)
    with pytest.raises(ConfigError, match=r"share_forward.*train- and eval-mode"):
        method.compute(student, x, y, torch.arange(4))


@pytest.mark.parametrize(
    "options",
    [{}, {"aligned_steps": "1,3"}, {"aligned_steps": "2"}, {"sample_steps": 2}, {"inner_loss": "kl-moving"}],
)
def test_share_forward_gives_the_loss_and_gradients_of_separate_passes(digits, models, options):
    teacher, trained = models
    x, y = batch(digits, 8, offset=200)
    student = mlp(24)
    student.load_state_dict(trained.state_dict())
    student.train()

    def run(share):
        torch.manual_seed(5)  # the step draw of sample_steps follows torch's seed
        method = methods.create("paths", teacher=teacher, eps=0.1, steps=3, share_forward=share, **options)
        student.zero_grad()
        with shared_random_starts(9):
            out = method.compute(student, x, y, torch.arange(8))
        out["loss"].backward()
        return out, [q.grad.clone() for q in student.parameters()], method.diagnostics()

    separate, grads_separate, diag_separate = run(False)
    shared, grads_shared, diag_shared = run(True)
    for key in separate:
        assert shared[key].item() == pytest.approx(separate[key].item(), abs=1e-6), key
    for a, b in zip(grads_separate, grads_shared, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert diag_shared == pytest.approx(diag_separate, abs=1e-6)
    assert student.training


def test_share_forward_skips_the_alignment_forward_of_the_shared_points(digits, models):
    teacher, trained = models
    x, y = batch(digits, 4)
    calls = []
    student = mlp(24)
    student.load_state_dict(trained.state_dict())
    student.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    for share, expected in ((False, [8, 8, 8, 8, 4 + 4 * 8]), (True, [8, 8, 8, 8, 4 + 8])):
        calls.clear()
        method = methods.create("paths", teacher=teacher, eps=0.1, steps=4, share_forward=share, chunk_size=0)
        method.compute(student.train(), x, y, torch.arange(4))
        if not share:  # the CPU splits the alignment of a BN-free student into batches: count rows
            calls[4:] = [sum(calls[4:])]
        assert calls == expected, share


def test_sampled_steps_are_a_seeded_subset_per_batch_that_resumes_exactly(models):
    teacher, _ = models
    torch.manual_seed(0)
    method = methods.create("paths", teacher=teacher, eps=0.1, steps=6, aligned_steps="2,3,4,5,6", sample_steps=2)
    draws = [method.draw_steps() for _ in range(40)]
    assert all(len(d) == 2 and d == tuple(sorted(d)) and set(d) <= {2, 3, 4, 5, 6} for d in draws)
    assert len(set(draws)) > 5  # a different subset from batch to batch
    counts = {k: sum(k in d for d in draws) for k in (2, 3, 4, 5, 6)}
    assert all(counts[k] > 5 for k in counts)  # every aligned step gets its turn
    torch.manual_seed(0)
    again = methods.create("paths", teacher=teacher, eps=0.1, steps=6, aligned_steps="2,3,4,5,6", sample_steps=2)
    assert [again.draw_steps() for _ in range(40)] == draws  # seeded by torch's seed (--seed)
    state = method.state_dict()
    expected = [method.draw_steps() for _ in range(5)]
    torch.manual_seed(123)  # a resumed run is built under another seed state: the checkpoint decides
    resumed = methods.create("paths", teacher=teacher, eps=0.1, steps=6, aligned_steps="2,3,4,5,6", sample_steps=2)
    resumed.load_state_dict(state)
    assert [resumed.draw_steps() for _ in range(5)] == expected
    assert method.options.sample_steps == 2
    assert methods.create("paths", teacher=teacher).options.sample_steps == 0


def test_sampled_steps_diagnostics_average_each_step_over_the_batches_it_was_drawn(digits, models):
    teacher, student = models
    torch.manual_seed(1)
    method = methods.create("paths", teacher=teacher, eps=0.1, steps=4, sample_steps=1, branches="untargeted")
    drawn = []
    original = method.draw_steps

    def spy():
        drawn.append(original())
        return drawn[-1]

    method.draw_steps = spy  # type: ignore[method-assign]
    method.on_epoch_start(0)
    for offset in range(0, 48, 8):
        x, y = batch(digits, 8, offset)
        out = method.compute(student, x, y, torch.arange(8))
    diagnostics = method.diagnostics()
    weights = {k: v for k, v in diagnostics.items() if k.startswith("paths/weight_u/")}
    assert set(weights) == {f"paths/weight_u/step_{k[0]:02d}" for k in drawn}
    assert all(v == pytest.approx(1.0) for v in weights.values())  # one step per batch: its weight is 1
    assert math.isfinite(out["loss"].item())


def test_sampled_steps_keep_the_cpu_alignment_in_calls_of_one_batch(digits, models):
    teacher, student = models
    x, y = batch(digits, 4)
    calls = []
    handle = teacher.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    method = methods.create("paths", teacher=teacher, eps=0.1, steps=4, sample_steps=1)
    method.compute(student, x, y, torch.arange(4))
    handle.remove()
    assert calls == [4, 4, 4]  # clean x, then the drawn step's points of the two branches, one batch each
