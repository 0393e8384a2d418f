"""Reference loops: each method as a straightforward loop in the style of its original repository.

Plain PyTorch: fp32, NCHW, eager, one pass per call. None of them calls .item() (the originals log
`loss.item()` every step; left out so that the comparison is about network passes, not host
synchronisation).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from speedbench.bench import Setup, create_method, sgd


def _kl_sum(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample KL(softmax(p) || softmax(q)), as `nn.KLDivLoss(reduction='none')(...).sum(1)`."""
    return F.kl_div(
        F.log_softmax(q_logits / temperature, dim=1), F.softmax(p_logits / temperature, dim=1), reduction="none"
    ).sum(1)


def _project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    return torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)


def _pgd_autograd(
    loss_of: Callable[[Tensor], Tensor],
    x: Tensor,
    eps: float,
    step: float,
    steps: int,
    start: Tensor,
    sign: float = 1.0,
) -> Tensor:
    """TRADES/ARD/RSLAD style: `torch.autograd.grad(loss, [x_adv])` on a summed loss."""
    x_adv = start.detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss = loss_of(x_adv)
        grad = torch.autograd.grad(loss, [x_adv])[0]
        x_adv = _project(x_adv.detach() + sign * step * torch.sign(grad.detach()), x, eps)
    return x_adv.detach()


def _uniform_start(x: Tensor, eps: float) -> Tensor:
    return torch.clamp(x + torch.zeros_like(x).uniform_(-eps, eps), 0.0, 1.0)


def _normal_start(x: Tensor) -> Tensor:
    return x.detach() + 0.001 * torch.randn_like(x)


def ref_pgd_at(s: Setup, opt: torch.optim.Optimizer) -> None:
    """Madry PGD-AT as in the PyTorch robust-overfitting code (`attack_pgd`): delta with
    `loss.backward()` (parameter gradients computed and thrown away), model left in train mode."""
    model, x, y = s.student, s.x, s.y
    model.train()
    delta = torch.zeros_like(x).uniform_(-s.eps, s.eps)
    delta = torch.clamp(x + delta, 0, 1) - x
    delta.requires_grad = True
    for _ in range(s.steps):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        grad = delta.grad.detach()
        d = torch.clamp(delta + s.step_size * torch.sign(grad), -s.eps, s.eps)
        delta.data = torch.clamp(x + d, 0, 1) - x
        delta.grad.zero_()
    delta = delta.detach()
    robust = F.cross_entropy(model(torch.clamp(x + delta, 0, 1)), y)
    opt.zero_grad()
    robust.backward()
    opt.step()


def ref_trades(s: Setup, opt: torch.optim.Optimizer, beta: float = 6.0) -> None:
    """yaodongyu/TRADES `trades_loss`: `model(x_natural)` re-evaluated inside every attack step and
    twice in the outer loss, as in the original."""
    model, x, y = s.student, s.x, s.y
    model.eval()
    x_adv = _normal_start(x)

    def kl(u: Tensor) -> Tensor:
        return F.kl_div(F.log_softmax(model(u), dim=1), F.softmax(model(x), dim=1), reduction="sum")

    x_adv = _pgd_autograd(kl, x, s.eps, s.step_size, s.steps, x_adv)
    model.train()
    opt.zero_grad()
    logits = model(x)
    loss_natural = F.cross_entropy(logits, y)
    loss_robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x), dim=1), reduction="sum") / len(x)
    loss = loss_natural + beta * loss_robust
    loss.backward()
    opt.step()


def ref_mart(s: Setup, opt: torch.optim.Optimizer, beta: float = 6.0) -> None:
    """YisenWang/MART `mart_loss`: eval-mode CE attack from x + 0.001 N(0, 1), then separate clean
    and adversarial forwards."""
    model, x, y = s.student, s.x, s.y
    model.eval()
    x_adv = _pgd_autograd(lambda u: F.cross_entropy(model(u), y), x, s.eps, s.step_size, s.steps, _normal_start(x))
    model.train()
    opt.zero_grad()
    logits = model(x)
    logits_adv = model(x_adv)
    adv_probs = F.softmax(logits_adv, dim=1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    nat_probs = F.softmax(logits, dim=1)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1).long()).squeeze()
    kl = F.kl_div(torch.log(adv_probs + 1e-12), nat_probs, reduction="none").sum(1)
    loss_robust = (1.0 / len(x)) * torch.sum(kl * (1.0000001 - true_probs))
    loss = loss_adv + beta * loss_robust
    loss.backward()
    opt.step()


def ref_kd(s: Setup, opt: torch.optim.Optimizer, tau: float = 4.0, alpha: float = 0.9) -> None:
    """Hinton KD: one teacher forward, one student forward."""
    with torch.no_grad():
        teacher_logits = s.teacher(s.x)
    s.student.train()
    logits = s.student(s.x)
    loss = alpha * tau**2 * _kl_sum(teacher_logits, logits, tau).mean() + (1 - alpha) * F.cross_entropy(logits, s.y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def _ard_attack(s: Setup) -> tuple[Tensor, Tensor]:
    """goldblum/AdversariallyRobustDistillation `AttackPGD.forward`: the attack runs with the student
    in train mode and returns `basic_net(x_adv)` (with grad) and `x_adv`."""
    model, x, y = s.student, s.x, s.y
    x_adv = _pgd_autograd(
        lambda u: F.cross_entropy(model(u), y, reduction="sum"),
        x,
        s.eps,
        s.step_size,
        s.steps,
        _uniform_start(x, s.eps),
    )
    return model(x_adv), x_adv


def ref_ard(s: Setup, opt: torch.optim.Optimizer, tau: float = 30.0, alpha: float = 1.0) -> None:
    """goldblum/AdversariallyRobustDistillation `train`: teacher(inputs) and basic_net(inputs) are
    always evaluated, and the (1 - alpha)·CE term is in the graph even when alpha = 1."""
    s.student.train()
    opt.zero_grad()
    outputs, _ = _ard_attack(s)
    teacher_outputs = s.teacher(s.x)
    basic_outputs = s.student(s.x)
    warnings.filterwarnings("ignore", message="reduction: 'mean' divides")  # ARD's nn.KLDivLoss() default
    loss = alpha * tau * tau * F.kl_div(
        F.log_softmax(outputs / tau, dim=1), F.softmax(teacher_outputs / tau, dim=1), reduction="mean"
    ) + (1.0 - alpha) * F.cross_entropy(basic_outputs, s.y)
    loss.backward()
    opt.step()


def ref_iad(s: Setup, opt: torch.optim.Optimizer, beta: float = 0.1, alpha_intro: float = 1.0) -> None:
    """IAD-I in the ARD style (not checked against the IAD code): ARD's attack, then the teacher on x
    and on x', the student on x for the introspection term; only the terms with non-zero weight."""
    s.student.train()
    opt.zero_grad()
    outputs, x_adv = _ard_attack(s)
    with torch.no_grad():
        teacher_clean = s.teacher(s.x)
        teacher_adv = s.teacher(x_adv)
    clean = s.student(s.x)
    trust = F.softmax(teacher_adv, dim=1).gather(1, s.y[:, None]).squeeze(1).pow(beta)
    loss = _kl_sum(teacher_clean, outputs).mean() + alpha_intro * ((1 - trust) * _kl_sum(clean, outputs)).mean()
    loss.backward()
    opt.step()


def ref_rslad(s: Setup, opt: torch.optim.Optimizer) -> None:
    """zibojia/RSLAD `rslad_inner_loss` + training script: teacher once on x, eval-mode KL attack
    from x + 0.001 N(0, 1), then separate adversarial and natural student forwards."""
    model, x = s.student, s.x
    model.train()
    opt.zero_grad()
    with torch.no_grad():
        teacher_logits = s.teacher(x)
    model.eval()
    soft = F.softmax(teacher_logits, dim=1)
    x_adv = _pgd_autograd(
        lambda u: F.kl_div(F.log_softmax(model(u), dim=1), soft, reduction="sum"),
        x,
        s.eps,
        s.step_size,
        s.steps,
        _normal_start(x),
    )
    model.train()
    adv_logits = model(x_adv)
    nat_logits = model(x)
    loss = 5 / 6 * _kl_sum(teacher_logits, adv_logits).mean() + 1 / 6 * _kl_sum(teacher_logits, nat_logits).mean()
    loss.backward()
    opt.step()


def ref_adaad(s: Setup, opt: torch.optim.Optimizer) -> None:
    """AdaAD `adaad_inner_loss`: each attack step evaluates student and teacher at the moving point
    (gradient through both); then the adversarial term only (alpha = 1)."""
    model, teacher, x = s.student, s.teacher, s.x
    model.eval()
    teacher.eval()
    x_adv = _pgd_autograd(
        lambda u: F.kl_div(F.log_softmax(model(u), dim=1), F.softmax(teacher(u), dim=1), reduction="sum"),
        x,
        s.eps,
        s.step_size,
        s.steps,
        _normal_start(x),
    )
    model.train()
    opt.zero_grad()
    adv_logits = model(x_adv)
    with torch.no_grad():
        teacher_adv = teacher(x_adv)
    loss = _kl_sum(teacher_adv, adv_logits).mean()
    loss.backward()
    opt.step()


class _MTARDWeights:
    def __init__(self) -> None:
        self.w_adv, self.w_nat = 0.5, 0.5
        self.init: tuple[Tensor, Tensor] | None = None

    def update(self, loss_adv: Tensor, loss_nat: Tensor, lr: float = 0.025) -> tuple[Tensor, Tensor]:
        losses = (loss_adv.detach(), loss_nat.detach())
        if self.init is None:
            self.init = losses
        rate_adv, rate_nat = losses[0] / self.init[0], losses[1] / self.init[1]
        target_nat = rate_nat / (rate_adv + rate_nat)
        w_nat = self.w_nat - lr * (self.w_nat - target_nat)
        self.w_nat = w_nat
        self.w_adv = 1 - w_nat
        return self.w_adv, self.w_nat


def ref_mtard(s: Setup, opt: torch.optim.Optimizer, weights: _MTARDWeights) -> None:
    """MTARD (not checked against its code): CE attack on the student, the robust teacher at x',
    the natural teacher at x, separate student forwards, weights from the relative loss decrease."""
    model, x, y = s.student, s.x, s.y
    model.eval()
    x_adv = _pgd_autograd(lambda u: F.cross_entropy(model(u), y), x, s.eps, s.step_size, s.steps, _normal_start(x))
    model.train()
    opt.zero_grad()
    with torch.no_grad():
        teacher_adv = s.teacher(x_adv)
        teacher_nat = s.natural_teacher(x)
    adv_logits = model(x_adv)
    nat_logits = model(x)
    kl_adv = _kl_sum(teacher_adv, adv_logits).mean()
    kl_nat = _kl_sum(teacher_nat, nat_logits).mean()
    w_adv, w_nat = weights.update(kl_adv, kl_nat)
    loss = w_adv * kl_adv + w_nat * kl_nat
    loss.backward()
    opt.step()


def ref_paths(s: Setup, opt: torch.optim.Optimizer) -> None:
    """METHODS.md Method A written plainly: the untargeted and the targeted path as two separate PGD
    runs recording their iterates, then every aligned point through teacher and student one step
    and one branch at a time."""
    model, teacher, x, y = s.student, s.teacher, s.x, s.y
    with torch.no_grad():
        teacher_clean = teacher(x)
    targets = (y + torch.randint(1, 10, y.shape, device=y.device)) % 10
    model.eval()
    paths = []
    for labels, sign in ((y, 1.0), (targets, -1.0)):
        z = _uniform_start(x, s.eps)
        iterates = []
        for _ in range(s.steps):
            z = _pgd_autograd(
                lambda u, labels=labels: F.cross_entropy(model(u), labels, reduction="sum"),
                x,
                s.eps,
                s.step_size,
                1,
                z,
                sign,
            )
            iterates.append(z)
        paths.append(iterates)
    model.train()
    opt.zero_grad()
    loss = 1 / 6 * _kl_sum(teacher_clean, model(x)).mean()
    for iterates in paths:
        kls, log_rel = [], []
        for z in iterates:
            with torch.no_grad():
                tz = teacher(z)
            kls.append(_kl_sum(tz, model(z)))
            log_rel.append(F.log_softmax(tz, dim=1).gather(1, y[:, None]).squeeze(1))
        kl = torch.stack(kls)
        weights = torch.softmax(kl.detach() + torch.stack(log_rel), dim=0)
        loss = loss + 5 / 12 * (weights * kl).sum(0).mean()
    loss.backward()
    opt.step()


def ref_gacd(s: Setup, opt: torch.optim.Optimizer, method: Any) -> None:
    """GACD written plainly around the method's own heads and memory bank: teacher features once, a
    PGD loop on the contrastive loss through `student.features` and the head, the loss (memory
    gather and both critics) evaluated from scratch at every call, then the student at x'."""
    model, x, y = s.student, s.x, s.y
    with torch.no_grad():
        teacher_logits, teacher_features = s.teacher.forward_features(x)
        anchor = method.embed_t(teacher_features)
    negatives = method.sample_negatives(s.index)
    model.eval()
    x_adv = _pgd_autograd(
        lambda u: method.contrastive_loss(anchor, method.embed_s(model.features(u)), negatives)[0].sum(),
        x,
        s.eps,
        s.step_size,
        s.steps,
        _uniform_start(x, s.eps),
    )
    model.train()
    opt.zero_grad()
    logits_adv, features_adv = model.forward_features(x_adv)
    z_s = method.embed_s(features_adv)
    per_sample, _ = method.contrastive_loss(method.embed_t(teacher_features), z_s, negatives)
    weights, _ = method.sample_weights(teacher_logits, y)
    loss = F.cross_entropy(logits_adv, y) + 0.8 * (weights * per_sample).mean()
    loss.backward()
    opt.step()
    method.memory.update(s.index, anchor.detach(), z_s.detach())


def _loop(name: str) -> Callable[..., None]:
    return globals()[f"ref_{name.replace('-', '_')}"]


#: the methods with a reference loop here (a `ref_<name>` function), in the order of the table
METHODS = tuple(key[4:].replace("_", "-") for key, value in list(globals().items()) if key.startswith("ref_"))


def make_reference(name: str, s: Setup) -> Callable[[], None]:
    s = s.copy(ours=False)
    extra: dict[str, Any] = {}
    if name == "gacd":  # the method's own heads and memory bank, trained with the student
        extra["method"] = create_method("gacd", s)
    if name == "mtard":
        extra["weights"] = _MTARDWeights()
    params = list(s.student.parameters()) + (list(extra["method"].parameters()) if "method" in extra else [])
    opt = sgd(params)
    loop = _loop(name)
    return lambda: loop(s, opt, **extra)


def reference_doc(name: str) -> str:
    """The docstring of the method's reference loop on one line (which repository's structure it follows)."""
    return " ".join((_loop(name).__doc__ or "").split())
