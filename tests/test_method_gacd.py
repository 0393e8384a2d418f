"""GACD (METHODS.md, Method B): estimators, reweighting, memory bank, guided attack, state, cross-task,
structure diagnostics and the linear probe. Expected values are written out by hand (plain `math`
or explicit tensor arithmetic), not by running the implementation twice."""

from __future__ import annotations

import copy
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustdistill import methods
from robustdistill.attacks import PGD, FeatureLoss
from robustdistill.data import ArrayDataset
from robustdistill.errors import ConfigError
from robustdistill.evaluate import structure
from robustdistill.evaluate.probe import fit_linear, linear_probe
from robustdistill.evaluate.structure import correlation_distance, linear_cka, structure_report
from robustdistill.methods import AttackSettings
from robustdistill.methods.contrast import MemoryBank, estimate_log_z, infonce_loss, nce_loss_from_scores
from robustdistill.methods.gacd import logits_and_features

# ---------------------------------------------------------------------------------------------
# tiny networks with the Classifier contract (features, forward_features, feature_dim)


class Net(nn.Module):
    """`features = tanh(A flatten(x) + a)`, `logits = fc(features)`."""

    def __init__(self, in_dim: int, feature_dim: int, num_classes: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.body = nn.Linear(in_dim, feature_dim)
        self.fc = nn.Linear(feature_dim, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        self.feature_dim = feature_dim
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.body(x.flatten(1)))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.fc(f), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class FixedLogitsTeacher(Net):
    """A teacher whose logits are a fixed table (one row per sample of the test batch)."""

    def __init__(self, logits: torch.Tensor, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.table = logits

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.table.clone(), self.features(x)


B, SHAPE = 4, (1, 3, 3)
IN_DIM = 9


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((B, *SHAPE), generator=g)
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # corners of the box: the clamp to [0, 1] matters
    return x, torch.tensor([0, 1, 2, 1]), torch.tensor([3, 0, 7, 5])


def make(teacher: nn.Module | None = None, student_dim: int = 5, **options):
    teacher = teacher if teacher is not None else Net(IN_DIM, 6, 3, seed=1)
    defaults = {"num_samples": 10, "nce_k": 3, "feat_dim": 4, "temperature": 0.5, "eps": 0.1, "steps": 5}
    defaults.update(options)
    return methods.create("gacd", teacher=teacher, student_dim=student_dim, **defaults)


# ---------------------------------------------------------------------------------------------
# hand formulas


def dot(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True))


def unit(v):
    n = math.sqrt(dot(v, v))
    return [a / n for a in v]


def h_by_hand(u, v, tau, k, n, z):
    """CRD's critic h = e^{u.v/tau} / (e^{u.v/tau} + Z K / N)."""
    e = math.exp(dot(u, v) / tau)
    return e / (e + z * k / n)


def nce_by_hand(anchor, positive, negatives, tau, n, z):
    k = len(negatives)
    value = -math.log(h_by_hand(anchor, positive, tau, k, n, z))
    for neg in negatives:
        value -= math.log(1.0 - h_by_hand(anchor, neg, tau, k, n, z))
    return value


def infonce_by_hand(anchors, candidates, tau):
    out = []
    for i, u in enumerate(anchors):
        exps = [math.exp(dot(u, v) / tau) for v in candidates]
        out.append(-math.log(exps[i] / sum(exps)))
    return out


# ---------------------------------------------------------------------------------------------
# estimators


@pytest.mark.parametrize("log_z", [0.0, 1.5])
def test_nce_loss_equals_crd_formula(log_z):
    anchor = [[1.0, 0.0], [0.6, 0.8]]
    positive = [[0.8, 0.6], [0.0, 1.0]]
    negatives = [[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [0.6, -0.8]]]
    scores_pos = (torch.tensor(anchor) * torch.tensor(positive)).sum(dim=1)
    scores_neg = torch.einsum("bkd,bd->bk", torch.tensor(negatives), torch.tensor(anchor))
    got = nce_loss_from_scores(scores_pos, scores_neg, temperature=0.5, num_samples=10, log_z=log_z)
    z = math.exp(log_z)
    expected = [nce_by_hand(anchor[i], positive[i], negatives[i], 0.5, 10, z) for i in range(2)]
    assert got.shape == (2,)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)


def test_nce_normalisation_constant_is_n_times_mean_exponential():
    pos = torch.tensor([0.5, -0.2])
    neg = torch.tensor([[0.1, 0.3], [-0.4, 0.9]])
    scores = [0.5, 0.1, 0.3, -0.2, -0.4, 0.9]
    expected = math.log(100 * sum(math.exp(s / 0.25) for s in scores) / 6)
    assert float(estimate_log_z(pos, neg, temperature=0.25, num_samples=100)) == pytest.approx(expected, rel=1e-6)


def test_infonce_loss_equals_cross_entropy_over_similarities():
    anchors = [unit([1.0, 2.0]), unit([-1.0, 0.5]), unit([0.3, -1.0])]
    candidates = [unit([0.9, 1.5]), unit([-1.0, -0.2]), unit([1.0, 1.0])]
    got = infonce_loss(torch.tensor(anchors), torch.tensor(candidates), temperature=0.2)
    assert got.tolist() == pytest.approx(infonce_by_hand(anchors, candidates, 0.2), rel=1e-5)


def test_method_nce_sums_both_directions_against_the_banks():
    method = make(estimator="nce", num_samples=5, nce_k=2, feat_dim=2)
    bank_t = [unit([1.0, 1.0]), unit([0.0, 1.0]), unit([1.0, -2.0]), unit([-1.0, 0.0]), unit([2.0, 1.0])]
    bank_s = [unit([0.5, 1.0]), unit([1.0, 0.0]), unit([-1.0, -1.0]), unit([0.3, 1.0]), unit([0.0, -1.0])]
    with torch.no_grad():
        method.memory.teacher.copy_(torch.tensor(bank_t))
        method.memory.student.copy_(torch.tensor(bank_s))
    z_t = [unit([1.0, 0.2]), unit([-0.5, 1.0])]
    z_s = [unit([0.8, 0.6]), unit([0.1, 1.0])]
    negatives = [[1, 4], [0, 2]]
    tau, n = 0.5, 5

    # log Z not set yet: CRD's estimate N * mean(e^{s/tau}) over each direction's K+1 scores
    def z_hand(anchors, positives, bank):
        scores = []
        for i in range(2):
            scores.append(dot(anchors[i], positives[i]))
            scores += [dot(anchors[i], bank[j]) for j in negatives[i]]
        return n * sum(math.exp(s / tau) for s in scores) / len(scores)

    z_dir_t, z_dir_s = z_hand(z_t, z_s, bank_s), z_hand(z_s, z_t, bank_t)
    loss, estimate = method.contrastive_loss(torch.tensor(z_t), torch.tensor(z_s), torch.tensor(negatives))
    expected = [
        nce_by_hand(z_t[i], z_s[i], [bank_s[j] for j in negatives[i]], tau, n, z_dir_t)
        + nce_by_hand(z_s[i], z_t[i], [bank_t[j] for j in negatives[i]], tau, n, z_dir_s)
        for i in range(2)
    ]
    assert loss.tolist() == pytest.approx(expected, rel=1e-5)
    assert estimate.tolist() == pytest.approx([math.log(z_dir_t), math.log(z_dir_s)], rel=1e-6)

    # once stored, the constants are used as they are
    with torch.no_grad():
        method.memory.log_z.copy_(torch.tensor([0.0, 2.0]))
    loss, _ = method.contrastive_loss(torch.tensor(z_t), torch.tensor(z_s), torch.tensor(negatives))
    expected = [
        nce_by_hand(z_t[i], z_s[i], [bank_s[j] for j in negatives[i]], tau, n, 1.0)
        + nce_by_hand(z_s[i], z_t[i], [bank_t[j] for j in negatives[i]], tau, n, math.exp(2.0))
        for i in range(2)
    ]
    assert loss.tolist() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("estimator", ["nce", "infonce"])
def test_contrastive_loss_falls_as_student_embeddings_move_to_their_anchors(estimator):
    torch.manual_seed(3)
    method = make(estimator=estimator, num_samples=50, nce_k=16, feat_dim=8, temperature=0.2)
    z_t = F.normalize(torch.randn(B, 8), dim=1)
    z_s0 = F.normalize(torch.randn(B, 8), dim=1)
    negatives = method.sample_negatives(torch.arange(B))
    if method.memory is not None:  # fix CRD's constant Z from the starting point, as training does
        method.memory.set_log_z(method.contrastive_loss(z_t, z_s0, negatives)[1])
    losses = []
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
        z_s = F.normalize((1 - alpha) * z_s0 + alpha * z_t, dim=1)
        losses.append(float(method.contrastive_loss(z_t, z_s, negatives)[0].mean()))
    # strictly falling on the way; at the very end (z_S = z_T for every sample) the other samples'
    # embeddings, which are the negatives, have also moved, so only the overall drop is asserted
    assert all(a > b for a, b in itertools.pairwise(losses[:4])), losses
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------------------------
# reweighting


def test_confidence_weights_zero_for_impossible_samples_and_mean_one():
    method = make(beta=2.0)
    logits = torch.tensor([[-1e9, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    y = torch.tensor([0, 0, 1, 2])
    weights, raw = method.sample_weights(logits, y)

    def p(row, label):
        exps = [math.exp(v) for v in row]
        return exps[label] / sum(exps)

    probs = [0.0, p([2.0, 1.0, 0.0], 0), p([0.0, 0.0, 3.0], 1), 1 / 3]
    raw_hand = [q**2 for q in probs]
    assert raw.tolist() == pytest.approx(raw_hand, rel=1e-5)
    assert weights[0].item() == 0.0
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert weights.tolist() == pytest.approx([r / (sum(raw_hand) / 4) for r in raw_hand], rel=1e-5)
    assert not weights.requires_grad

    ones, _ = make(reweight="none").sample_weights(logits, y)
    assert ones.tolist() == [1.0] * 4


@pytest.mark.parametrize("estimator", ["infonce", "nce"])
def test_full_loss_formula_with_a_fixed_adversarial_batch(monkeypatch, estimator):
    """L = CE(S(x'), y) + beta_c mean_i w_i l_i + alpha_kd KL(p_T(x) || p_S(x')), by hand for both estimators."""
    x, y, index = batch()
    x_adv = (x + 0.05).clamp(0, 1)
    teacher_logits = torch.tensor([[-1e9, 1.0, 0.0], [0.5, 2.0, -1.0], [0.0, 0.0, 0.0], [1.0, -1.0, 0.3]])
    teacher = FixedLogitsTeacher(teacher_logits, in_dim=IN_DIM, feature_dim=6, num_classes=3, seed=1)
    student = Net(IN_DIM, 5, 3, seed=2)
    calls = []

    def fake_pgd(self, model, *, loss="ce", random_start=True, **kwargs):
        calls.append((model, loss))
        return lambda xx, yy, **kw: x_adv.clone()

    monkeypatch.setattr(AttackSettings, "pgd", fake_pgd)
    method = make(teacher, estimator=estimator, alpha_kd=0.5, beta_c=0.8, beta=1.0)
    negatives = [[1, 4, 9], [0, 2, 8], [6, 1, 3], [2, 7, 0]]  # nce: K = 3 fixed slots per sample
    if estimator == "nce":
        g = torch.Generator().manual_seed(5)
        bank_t, bank_s = (F.normalize(torch.randn(10, 4, generator=g), dim=1) for _ in range(2))
        with torch.no_grad():
            method.memory.teacher.copy_(bank_t)
            method.memory.student.copy_(bank_s)
            method.memory.log_z.copy_(torch.tensor([0.3, -0.2]))
        monkeypatch.setattr(method, "sample_negatives", lambda idx: torch.tensor(negatives))
        bank_t, bank_s = bank_t.tolist(), bank_s.tolist()
    out = method.compute(student, x, y, index)
    assert calls[0][0] is student and isinstance(calls[0][1], FeatureLoss)

    with torch.no_grad():
        f_t = torch.tanh(x.flatten(1) @ teacher.body.weight.t() + teacher.body.bias)
        f_s = torch.tanh(x_adv.flatten(1) @ student.body.weight.t() + student.body.bias)
        logits_s = f_s @ student.fc.weight.t() + student.fc.bias
        g_t = f_t @ method.embed_t.linear.weight.t() + method.embed_t.linear.bias
        g_s = f_s @ method.embed_s.linear.weight.t() + method.embed_s.linear.bias
        z_t = (g_t / g_t.pow(2).sum(1, keepdim=True).sqrt()).tolist()
        z_s = (g_s / g_s.pow(2).sum(1, keepdim=True).sqrt()).tolist()
    rows_s = logits_s.tolist()
    if estimator == "infonce":
        l_contrast = infonce_by_hand(z_t, z_s, 0.5)
    else:  # teacher-anchored against the student bank + student-anchored against the teacher bank
        l_contrast = [
            nce_by_hand(z_t[i], z_s[i], [bank_s[j] for j in negatives[i]], 0.5, 10, math.exp(0.3))
            + nce_by_hand(z_s[i], z_t[i], [bank_t[j] for j in negatives[i]], 0.5, 10, math.exp(-0.2))
            for i in range(B)
        ]

    def softmax(row):
        exps = [math.exp(v - max(row)) for v in row]
        return [e / sum(exps) for e in exps]

    p_true = [softmax(r)[int(c)] for r, c in zip(teacher_logits.tolist(), y, strict=True)]
    w = [q / (sum(p_true) / B) for q in p_true]
    ce = sum(-math.log(softmax(rows_s[i])[int(y[i])]) for i in range(B)) / B
    kd = 0.0
    for i in range(B):
        p, q = softmax(teacher_logits[i].tolist()), softmax(rows_s[i])
        kd += sum(pc * (math.log(pc) - math.log(qc)) for pc, qc in zip(p, q, strict=True) if pc > 0)
    kd /= B
    contrast = sum(wi * li for wi, li in zip(w, l_contrast, strict=True)) / B
    assert w[0] == 0.0
    assert out["ce_adv"].item() == pytest.approx(ce, rel=1e-5)
    assert out["contrast"].item() == pytest.approx(contrast, rel=1e-5)
    assert out["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert out["loss"].item() == pytest.approx(ce + 0.8 * contrast + 0.5 * kd, rel=1e-5)
    assert out["weight_mean"].item() == pytest.approx(sum(p_true) / B, rel=1e-5)

    out["loss"].backward()
    assert method.embed_s.linear.weight.grad is not None and method.embed_t.linear.weight.grad is not None
    assert student.body.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_adv_loss_ce_attacks_with_cross_entropy(monkeypatch):
    seen = []

    def fake_pgd(self, model, *, loss="ce", random_start=True, **kwargs):
        seen.append(loss)
        return lambda xx, yy, **kw: xx.clone()

    monkeypatch.setattr(AttackSettings, "pgd", fake_pgd)
    x, y, index = batch()
    make(adv_loss="ce").compute(Net(IN_DIM, 5, 3, seed=2), x, y, index)
    assert seen == ["ce"]


# ---------------------------------------------------------------------------------------------
# memory bank


def test_memory_bank_momentum_update_touches_only_the_batch_slots():
    bank = MemoryBank(6, 2, momentum=0.3)  # not 0.5: m and 1 - m must not be interchangeable
    rows_t = [unit([1.0, float(i)]) for i in range(6)]
    rows_s = [unit([float(i), -1.0]) for i in range(6)]
    with torch.no_grad():
        bank.teacher.copy_(torch.tensor(rows_t))
        bank.student.copy_(torch.tensor(rows_s))
    z_t = [unit([0.0, 1.0]), unit([-1.0, 1.0])]
    z_s = [unit([1.0, 1.0]), unit([2.0, -1.0])]
    bank.update(torch.tensor([4, 1]), torch.tensor(z_t), torch.tensor(z_s))
    for rows, buffer, z in ((rows_t, bank.teacher, z_t), (rows_s, bank.student, z_s)):
        for slot in range(6):
            if slot in (4, 1):
                j = (4, 1).index(slot)
                expected = unit([0.3 * a + 0.7 * b for a, b in zip(rows[slot], z[j], strict=True)])
            else:
                expected = rows[slot]
            assert buffer[slot].tolist() == pytest.approx(expected, abs=1e-6)


def test_memory_bank_starts_normalised_and_negatives_avoid_the_own_slot():
    torch.manual_seed(0)
    bank = MemoryBank(5, 8)
    assert bank.teacher.norm(dim=1).tolist() == pytest.approx([1.0] * 5, abs=1e-6)
    assert not torch.equal(bank.teacher, bank.student)
    assert torch.isnan(bank.log_z).all()
    index = torch.tensor([0, 3, 4])
    negatives = bank.sample_negatives(index, 400)
    assert negatives.shape == (3, 400)
    for row, own in zip(negatives, index, strict=True):
        assert set(row.tolist()) == set(range(5)) - {int(own)}


def test_compute_updates_the_banks_after_the_loss_and_stays_differentiable():
    torch.manual_seed(0)
    method = make(estimator="nce")
    x, y, index = batch()
    teacher_before = method.memory.teacher.clone()
    student_before = method.memory.student.clone()
    out = method.compute(Net(IN_DIM, 5, 3, seed=2), x, y, index)
    out["loss"].backward()  # the in-place bank update did not break the graph
    others = [i for i in range(10) if i not in index.tolist()]
    assert torch.equal(method.memory.teacher[others], teacher_before[others])
    assert torch.equal(method.memory.student[others], student_before[others])
    assert not torch.allclose(method.memory.teacher[index], teacher_before[index])
    assert not torch.allclose(method.memory.student[index], student_before[index])
    assert not torch.isnan(method.memory.log_z).any()
    assert set(method.diagnostics()) == {"nce_log_z_t", "nce_log_z_s"}


def test_dense_and_gathered_scoring_give_the_same_step_and_auto_picks_by_bank_size():
    """`nce_scoring`: the whole-bank matrix product and the gathered rows are the same numbers."""
    x, y, index = batch()
    runs = {}
    for scoring in ("rows", "dense"):
        torch.manual_seed(0)
        method = make(estimator="nce", nce_scoring=scoring)
        student = Net(IN_DIM, 5, 3, seed=2)
        out = method.compute(student, x, y, index)
        out["loss"].backward()  # after the in-place bank update: the negatives are copies
        grads = [p.grad.clone() for p in [*student.parameters(), *method.parameters()] if p.grad is not None]
        runs[scoring] = (out["loss"].detach(), grads, method.memory.student.clone(), method.memory.teacher.clone())
    (loss_r, grads_r, *banks_r), (loss_d, grads_d, *banks_d) = runs["rows"], runs["dense"]
    torch.testing.assert_close(loss_d, loss_r)
    assert len(grads_d) == len(grads_r) > 0
    for g_d, g_r in zip(grads_d, grads_r, strict=True):
        torch.testing.assert_close(g_d, g_r)
    for bank_d, bank_r in zip(banks_d, banks_r, strict=True):
        torch.testing.assert_close(bank_d, bank_r)

    bank = make(estimator="nce", num_samples=10).memory
    slots = torch.tensor([[1, 2], [0, 3]])
    assert bank.negatives(slots, "teacher").matrix is not None  # N = 10 <= 32 K = 64: dense
    big = make(estimator="nce", num_samples=100).memory
    assert big.negatives(slots, "teacher").rows is not None  # N = 100 > 64: gathered rows
    held = bank.negatives(slots, "student", "rows")
    anchor = F.normalize(torch.randn(2, 4), dim=1)
    expected = torch.stack([bank.student[slots[b]] @ anchor[b] for b in range(2)])
    torch.testing.assert_close(held.scores(anchor), expected)
    torch.testing.assert_close(bank.negatives(slots, "student", "dense").scores(anchor), expected)
    with pytest.raises(ConfigError, match="scoring"):
        bank.negatives(slots, "student", "sparse")


# ---------------------------------------------------------------------------------------------
# guided adversarial examples


@pytest.mark.parametrize("estimator", ["nce", "infonce"])
def test_guided_examples_raise_the_contrastive_loss_inside_the_ball(estimator):
    torch.manual_seed(1)
    teacher, student = Net(IN_DIM, 6, 3, seed=1), Net(IN_DIM, 5, 3, seed=2)
    method = make(teacher, estimator=estimator, eps=0.1, steps=10)
    x, y, index = batch()
    with torch.no_grad():
        z_t = method.embed_t(teacher.features(x))
    negatives = method.sample_negatives(index)
    banks = [b.clone() for b in method.buffers()]
    x_adv = method.guided_examples(student, x, y, z_t, negatives)
    torch.manual_seed(2)
    x_ce = PGD(student, eps=0.1, steps=10)(x, y)  # the same budget spent on the classifier's CE instead
    with torch.no_grad():
        clean, adv, ce = (
            method.contrastive_loss(z_t, method.embed_s(student.features(point)), negatives)[0]
            for point in (x, x_adv, x_ce)
        )
    assert adv.mean() > clean.mean() + 1e-3
    # it climbs the contrastive objective itself: higher than a CE attack of the same budget reaches
    assert adv.mean() > ce.mean() + 1e-3
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    for before, after in zip(banks, method.buffers(), strict=True):  # no bank update during PGD
        torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)
    assert student.training and all(p.requires_grad for p in method.embed_s.parameters())


# ---------------------------------------------------------------------------------------------
# state


def test_state_dict_holds_heads_and_banks_and_restores_identical_losses():
    teacher, student = Net(IN_DIM, 6, 3, seed=1), Net(IN_DIM, 5, 3, seed=2)
    x, y, index = batch()
    torch.manual_seed(0)
    first = make(teacher)
    first.compute(student, x, y, index)  # banks and log Z move away from their initial values
    state = copy.deepcopy(first.state_dict())
    assert {
        "embed_s.linear.weight",
        "embed_t.linear.weight",
        "memory.teacher",
        "memory.student",
        "memory.log_z",
    } <= set(state)
    assert not any(key.startswith(("body", "fc", "teacher")) for key in state)
    torch.manual_seed(1)
    second = make(teacher)
    assert not torch.equal(second.embed_s.linear.weight, first.embed_s.linear.weight)
    second.load_state_dict(state)
    torch.manual_seed(7)
    a = first.compute(student, x, y, index)
    torch.manual_seed(7)
    b = second.compute(student, x, y, index)
    for key in ("loss", "contrast", "ce_adv"):
        assert a[key].item() == b[key].item()
    assert torch.equal(first.memory.student, second.memory.student)


class Wrapper(nn.Module):
    """Stands in for DistributedDataParallel: `.module`, a forward, no features API."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def test_a_wrapped_student_gives_the_same_features_through_its_forward():
    student = Net(IN_DIM, 5, 3, seed=2)
    x, y, index = batch()
    logits, features = logits_and_features(Wrapper(student), x)
    expected_logits, expected_features = student.forward_features(x)
    assert torch.equal(logits, expected_logits) and torch.equal(features, expected_features)
    assert not student.fc._forward_hooks  # the capture hook is removed
    out = make(estimator="infonce").compute(Wrapper(student), x, y, index)
    out["loss"].backward()
    assert student.body.weight.grad is not None


# ---------------------------------------------------------------------------------------------
# cross-task, configuration


def test_cross_task_runs_with_reweighting_off_and_a_warning():
    from robustdistill import models

    torch.manual_seed(0)
    teacher = models.create("smallcnn", num_classes=5, in_channels=1, width=0.25, hidden=8)
    student = models.create("smallcnn", num_classes=3, in_channels=1, width=0.25, hidden=6)
    with pytest.warns(UserWarning, match="reweighting is off"):
        method = methods.create(
            "gacd",
            teacher=teacher,
            student_dim=student.feature_dim,
            num_samples=10,
            nce_k=4,
            same_label_space=False,
            eps=0.1,
            steps=2,
        )
    assert method.options.reweight == "none" and not method.facts.same_label_space  # what trains is recorded
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    out = method.compute(student, x, y, torch.arange(4))
    assert out["weight_mean"].item() == 1.0
    out["loss"].backward()
    assert torch.isfinite(out["loss"])

    with pytest.raises(ConfigError, match="alpha_kd"):
        methods.create("gacd", teacher=teacher, student_dim=6, num_samples=10, same_label_space=False, alpha_kd=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reweight=none asked for: nothing to warn about
        methods.create(
            "gacd", teacher=teacher, student_dim=6, num_samples=10, nce_k=4, same_label_space=False, reweight="none"
        )
    same = methods.create("gacd", teacher=teacher, student_dim=6, num_samples=10, nce_k=4, eps=0.1, steps=1)
    with pytest.raises(ConfigError, match="same_label_space"):
        same.compute(student, x, y, torch.arange(4))


def test_a_teacher_of_another_dataset_with_as_many_classes_is_cross_task(tmp_path):
    from robustdistill import models
    from robustdistill.runs import check_label_space, trained_on

    teacher = models.create("smallcnn", num_classes=10, in_channels=1, width=0.25, hidden=8)
    models.save(teacher, tmp_path / "teacher" / "model.safetensors")
    (tmp_path / "teacher" / "config.yaml").write_text("data: fashion_mnist\n")  # an alias of fashion-mnist
    assert trained_on(tmp_path / "teacher") == "fashion-mnist"
    assert trained_on(tmp_path / "teacher" / "model.safetensors") == "fashion-mnist"
    assert trained_on(tmp_path / "elsewhere") is None

    with pytest.warns(UserWarning, match="cross-task"):
        assert not check_label_space(teacher, 10, "gacd", teacher_data="fashion-mnist", student_data="animal-mnist")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_label_space(teacher, 10, "gacd", teacher_data="fashion-mnist", student_data="fashion-mnist")
        assert check_label_space(teacher, 10, "gacd")  # unknown origin: the class count decides
    with pytest.warns(UserWarning, match="same classes in the same order"):
        assert check_label_space(teacher, 10, "rslad", teacher_data="fashion-mnist", student_data="animal-mnist")


def test_configuration_errors_and_options():
    teacher = Net(IN_DIM, 6, 3, seed=1)
    assert "gacd" in methods.available()
    assert {
        "estimator",
        "feat_dim",
        "nce_k",
        "temperature",
        "momentum",
        "reweight",
        "beta",
        "adv_loss",
        "beta_c",
        "alpha_kd",
        "nce_scoring",
        "eps",
        "step_size",
        "steps",
        "norm",
        "reuse_steps",
    } == set(methods.spec("gacd").options.keys())  # student_dim, num_samples, same_label_space: RunFacts
    with pytest.raises(ConfigError, match="student_dim"):
        methods.create("gacd", teacher=teacher, num_samples=10)
    with pytest.raises(ConfigError, match="num_samples"):
        methods.create("gacd", teacher=teacher, student_dim=5)
    with pytest.raises(ConfigError, match="teacher"):
        methods.create("gacd", student_dim=5, num_samples=10)
    for bad in (
        {"estimator": "jsd"},
        {"momentum": 1.0},
        {"reweight": "entropy"},
        {"adv_loss": "kl"},
        {"temperature": 0.0},
        {"feat_dim": 0},
        {"nce_scoring": "sparse"},
        {"same_label_space": "no"},
    ):
        with pytest.raises(ConfigError):
            make(**bad)
    infonce = methods.create("gacd", teacher=teacher, student_dim=5, estimator="infonce")
    assert infonce.memory is None and infonce.options.estimator == "infonce"
    with pytest.warns(UserWarning, match="nce_k"):
        make(num_samples=4, nce_k=8)


# ---------------------------------------------------------------------------------------------
# structure diagnostics


def cka_by_hsic(x: torch.Tensor, y: torch.Tensor) -> float:
    """Kornblith et al.'s definition through centred Gram matrices: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, ell = x.double() @ x.double().t(), y.double() @ y.double().t()
    hsic = lambda a, b: float(torch.trace(a @ h @ b @ h))  # noqa: E731
    return hsic(k, ell) / math.sqrt(hsic(k, k) * hsic(ell, ell))


def test_linear_cka_identity_invariances_and_definition():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 5, generator=g, dtype=torch.float64)
    y = torch.randn(20, 4, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-12)
    base = linear_cka(x, y)
    assert 0.0 < base < 0.9
    assert base == pytest.approx(cka_by_hsic(x, y), rel=1e-9)
    assert linear_cka(2.5 * x @ q, -0.3 * y @ q2) == pytest.approx(base, rel=1e-9)
    anisotropic = torch.diag(torch.tensor([1.0, 10.0, 0.1, 1.0, 3.0], dtype=torch.float64))
    assert abs(linear_cka(x @ anisotropic, y) - base) > 1e-3  # not invariant to arbitrary linear maps
    with pytest.raises(ConfigError):
        linear_cka(x, y[:10])


def test_correlation_distance_by_hand_and_large_batch_identity(monkeypatch):
    f_t = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # cosine Gram = identity
    f_s = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # cosine Gram = all ones
    assert correlation_distance(f_t, f_s) == pytest.approx(math.sqrt(2) / 2, rel=1e-12)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(30, 6, generator=g), torch.randn(30, 3, generator=g)
    assert correlation_distance(a, a * torch.rand(30, 1, generator=g) + 0) == pytest.approx(0.0, abs=1e-7)
    direct = correlation_distance(a, b)
    monkeypatch.setattr(structure, "_DIRECT_MAX", 4)
    assert correlation_distance(a, b) == pytest.approx(direct, rel=1e-9)


def test_structure_report_on_clean_and_adversarial_inputs():
    teacher, student = Net(IN_DIM, 6, 3, seed=1), Net(IN_DIM, 5, 3, seed=2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, *SHAPE, generator=g)
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    report = structure_report(teacher, student, x, x_adv)
    assert set(report) == {
        "n",
        "cka_clean",
        "corr_dist_clean",
        "cka_adv",
        "corr_dist_adv",
        "cka_anchor",
        "corr_dist_anchor",
    }
    with torch.no_grad():
        assert report["cka_adv"] == pytest.approx(linear_cka(teacher.features(x_adv), student.features(x_adv)))
    self_report = structure_report(teacher, teacher, x)
    assert self_report["cka_clean"] == pytest.approx(1.0) and self_report["corr_dist_clean"] == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# linear probe


class Pixels(nn.Module):
    """Features are the raw pixels (a frozen identity backbone)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.feature_dim = 9

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * self.scale


def toy_dataset(n: int, seed: int) -> ArrayDataset:
    """Three classes; class c lights up pixel c (noisy background): linearly separable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 90, (n, 1, 3, 3), generator=g, dtype=torch.uint8)
    flat = images.view(n, 9)
    flat[torch.arange(n), labels] = 200
    return ArrayDataset(images, labels.long(), 3, "toy", "train", (0.5,), (0.25,))


def test_linear_probe_beats_chance_and_reports_robustness():
    model = Pixels()
    result = linear_probe(model, toy_dataset(60, 0), toy_dataset(30, 1), epochs=30, attack="fgsm", eps=0.6)
    assert result["accuracy"] > 0.9 and result["train_accuracy"] > 0.9  # chance is 1/3
    assert result["robust_accuracy"] < result["accuracy"]
    assert result["n_train"] == 60 and result["feature_dim"] == 9 and result["attack"] == "fgsm"
    assert model.training and model.scale.requires_grad

    from robustdistill.attacks import PGD

    weak = linear_probe(
        model, toy_dataset(60, 0), toy_dataset(30, 1), epochs=30, attack=lambda net: PGD(net, eps=0.01, steps=2)
    )
    assert weak["robust_accuracy"] == pytest.approx(weak["accuracy"], abs=0.1)


def test_probe_solver_reaches_the_regularised_logistic_regression_optimum():
    g = torch.Generator().manual_seed(0)
    features, labels = torch.randn(40, 3, generator=g), torch.randint(0, 3, (40,), generator=g)
    linear = fit_linear(features, labels, 3, epochs=500, weight_decay=0.1)
    weight = linear.weight.clone().requires_grad_(True)
    bias = linear.bias.clone().requires_grad_(True)
    objective = F.cross_entropy(features @ weight.t() + bias, labels) + 0.05 * weight.pow(2).sum()
    grad_w, grad_b = torch.autograd.grad(objective, (weight, bias))
    assert grad_w.norm() < 1e-4 and grad_b.norm() < 1e-4  # first-order optimality of a strictly convex problem
    assert weight.abs().sum() > 0.1
