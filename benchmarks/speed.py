"""Speed of one training step of every method, measured three ways in one run.

For each method (pgd-at, trades, mart, kd, ard, iad, rslad, adaad, mtard, paths, gacd):

- **ours**: exactly what `robustdistill.train.fit` does per step: `method(student, x, y, index)`
  inside the per-step random-start context (and bf16 autocast + channels_last on a GPU), then
  `loss.backward()` and one SGD step.
- **reference**: a straightforward loop in the style of the method's original repository, written
  out below (eager, fp32, NCHW, one network pass per call, the attack as a plain PGD loop, a
  teacher called once per use, `paths` as two unbatched branches aligned step by step). Each one
  says which repository's structure it follows; where we could not check the original, the
  reference computes only what the method's formula needs (never an invented redundancy).
- **unavoidable**: the sum of the network passes the method cannot do without, each measured alone
  (within every repeat, next to ours and the reference) in our precision and memory format, in the
  fastest way: one call over all its rows on a GPU, calls of one batch on the CPU (where calls over
  thousands of rows are 2-3x slower per row): K student forward + input-backward
  passes for the attack, the teacher forwards the loss needs, and one student forward + backward +
  SGD step over every row the outer loss sees (METHODS.md gives the `paths` cost model).

Also reported: images per second (batch / step time) and peak memory of one step (GPU:
`torch.cuda.max_memory_allocated` above the memory held before the step; CPU: the highest running
sum of the tensor allocations and frees that `torch.profiler` records during one extra, untimed
step, the same quantity without a caching allocator). Ratios are what count:
ours/reference and ours/unavoidable come from the same process, interleaved repeat by repeat,
with the best of the repeats (as `timeit`: on a shared machine noise only ever adds time; the medians
are in the JSON too).

On a CPU shared with other jobs use `--threads 1`: with more threads than free cores, OpenMP
threads spin-wait for each other and step times vary several-fold from repeat to repeat.

Examples::

    # CPU (records benchmarks/results/speed_cpu.json and .md)
    python benchmarks/speed.py --device cpu --batch 128 --student smallcnn --teacher preact-resnet-18 \\
        --teacher-width 0.25 --threads 1 --repeats 3 --out benchmarks/results/speed_cpu.json
    # GPU: ResNet-18 student, WRN-34-10 teacher, 32x32 synthetic tensors, bf16 autocast + channels_last
    python benchmarks/speed.py --device cuda --batch 128 --student resnet-18 --teacher wrn-34-10 \\
        --repeats 10 --out benchmarks/results/speed_gpu.json
    # configurations of one method against a baseline (ours only, interleaved), added to a recorded run
    python benchmarks/speed.py --device cpu --batch 128 --student smallcnn --teacher preact-resnet-18 \\
        --teacher-width 0.25 --threads 1 --repeats 2 --methods "" --variant "share=paths:share_forward=true" \\
        --variant "even=paths:aligned_steps=2,4,6,8,10;share_forward=true" --add-to benchmarks/results/speed_cpu.json

`--variant LABEL=METHOD:key=value;key=value` times `ours` of a method with those options (values
as on the command line, `;` between options) against `ours` of `--baseline` (ard) in the same
process, repeat by repeat, in wall-clock and in process CPU seconds; `--add-to` appends them, with
their own command and machine, to the `variant_runs` of an existing JSON record and rewrites its table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill import methods, models
from robustdistill.attacks import attack_mode, shared_random_starts
from robustdistill.config import parse_value

METHODS = ("pgd-at", "trades", "mart", "kd", "ard", "iad", "rslad", "adaad", "mtard", "paths", "gacd")
TARGET_REFERENCE = 0.8
TARGET_UNAVOIDABLE = 1.15
TARGET_VARIANT = 2.0  # a variant's step time over the baseline's (issue 17: cheap paths at <= 2x ard)
CIFAR10_TRAIN = 50_000


# ============================================================================ set-up


@dataclass
class Setup:
    device: torch.device
    batch: int
    steps: int
    eps: float
    step_size: float
    student: nn.Module
    teacher: nn.Module
    natural_teacher: nn.Module
    x: Tensor
    y: Tensor
    index: Tensor
    num_samples: int
    low_precision: bool  # bf16 autocast for ours and the unavoidable passes (GPU)
    channels_last: bool
    notes: list[str] = field(default_factory=list)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.low_precision:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def ours_input(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def copy(self, *, ours: bool) -> Setup:
        """Private copies of the networks: ours in our memory format, the reference's plain NCHW."""
        nets = [copy.deepcopy(n) for n in (self.student, self.teacher, self.natural_teacher)]
        if ours and self.channels_last:
            for net in nets:
                net.to(memory_format=torch.channels_last)
        return dataclasses.replace(self, student=nets[0], teacher=nets[1], natural_teacher=nets[2])


def build_setup(args: argparse.Namespace) -> Setup:
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    shape = (3, 32, 32) if gpu else (1, 28, 28)
    if args.image_shape:
        shape = tuple(int(v) for v in args.image_shape.split("x"))
    channels = shape[0]
    torch.manual_seed(0)

    def make(name: str, width: float | None, extra: dict[str, Any] | None = None) -> nn.Module:
        options = {} if width is None else {"width": width}
        options.update(extra or {})
        return models.create(name, num_classes=10, in_channels=channels, **options).to(device)

    student = make(args.student, args.student_width, args.student_opts)
    teacher = make(args.teacher, args.teacher_width)
    natural = make(args.teacher, args.teacher_width)
    for net in (teacher, natural):  # random teachers with opinions (a zero-initialised head is uniform)
        nn.init.normal_(net.fc.weight, std=0.5)
        net.eval().requires_grad_(False)  # frozen, as in every original repository
    eps = 8 / 255 if gpu else 0.1
    x = torch.rand(args.batch, *shape, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    index = torch.randperm(args.num_samples, device=device)[: args.batch]
    return Setup(
        device=device,
        batch=args.batch,
        steps=args.steps,
        eps=eps,
        step_size=eps / 4,
        student=student,
        teacher=teacher,
        natural_teacher=natural,
        x=x,
        y=y,
        index=index,
        num_samples=args.num_samples,
        low_precision=gpu and not args.fp32,
        channels_last=args.channels_last == "on" or (args.channels_last == "auto" and gpu),
    )


def create_method(name: str, s: Setup, extra: dict[str, Any] | None = None) -> methods.Method:
    options: dict[str, Any] = {"eps": s.eps, "step_size": s.step_size, "steps": s.steps}
    if name == "kd":
        options = {}
    if name not in ("pgd-at", "trades", "mart"):
        options["teacher"] = s.teacher
    if name == "mtard":
        options["natural_teacher"] = s.natural_teacher
    if name == "iad":
        options["warmup_epochs"] = 0  # the full method: introspection on
    if name == "gacd":
        options.update(student_dim=s.student.feature_dim, num_samples=s.num_samples)
    options.update(extra or {})
    return methods.create(name, **options).to(s.device)


# ============================================================================ timing


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_both(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call. With one thread on a CPU shared with other
    jobs, the CPU time is the work of the step without the time spent waiting for a core."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _allocation_peak_bytes(prof: torch.profiler.profile) -> int:
    """Highest running sum of the tensor allocations (+) and frees (-) the profiler recorded."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Peak tensor memory (MiB) of the block above what was held before it (see the module docstring)."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        synchronize(device)
        out["peak_mib"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        return
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        yield out
    out["peak_mib"] = _allocation_peak_bytes(prof) / 2**20


def sgd(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4)


# ============================================================================ ours (the fit step)


def make_ours(name: str, s: Setup, options: dict[str, Any] | None = None) -> Callable[[], None]:
    s = s.copy(ours=True)
    method = create_method(name, s, options)
    student = s.student
    trainable = [p for p in student.parameters() if p.requires_grad] + [
        p for p in method.parameters() if p.requires_grad
    ]
    optimizer = sgd(trainable)
    x = s.ours_input(s.x)
    counter = [0]

    def step() -> None:
        student.train()
        method.train()
        counter[0] += 1
        with s.autocast(), shared_random_starts(counter[0]):
            terms = method(student, x, s.y, s.index)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()

    return step


# ============================================================================ reference loops
#
# Plain PyTorch in the style of the original repositories: fp32, NCHW, eager, one pass per call.
# None of them calls .item() (the originals log `loss.item()` every step; left out so that the
# comparison is about network passes, not host synchronisation).


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


def make_reference(name: str, s: Setup) -> Callable[[], None]:
    s = s.copy(ours=False)
    student = s.student
    extra: list[nn.Parameter] = []
    state: dict[str, Any] = {}
    if name == "gacd":
        state["method"] = create_method("gacd", s)
        extra = list(state["method"].parameters())
    opt = sgd(list(student.parameters()) + extra)
    weights = _MTARDWeights()
    table: dict[str, Callable[[], None]] = {
        "pgd-at": lambda: ref_pgd_at(s, opt),
        "trades": lambda: ref_trades(s, opt),
        "mart": lambda: ref_mart(s, opt),
        "kd": lambda: ref_kd(s, opt),
        "ard": lambda: ref_ard(s, opt),
        "iad": lambda: ref_iad(s, opt),
        "rslad": lambda: ref_rslad(s, opt),
        "adaad": lambda: ref_adaad(s, opt),
        "mtard": lambda: ref_mtard(s, opt, weights),
        "paths": lambda: ref_paths(s, opt),
        "gacd": lambda: ref_gacd(s, opt, state.get("method")),
    }
    return table[name]


# ============================================================================ unavoidable passes


class Passes:
    """Each kind of network pass alone at a given number of rows, in our precision and memory format."""

    def __init__(self, s: Setup) -> None:
        s = s.copy(ours=True)
        self.s = s
        self.fns: dict[tuple[str, int], Callable[[], None]] = {}
        self._optimizer = sgd(list(s.student.parameters()))

    def _input(self, rows: int) -> tuple[Tensor, Tensor]:
        s = self.s
        reps = math.ceil(rows / s.batch)
        x = s.x.repeat(reps, 1, 1, 1)[:rows]
        y = s.y.repeat(reps)[:rows]
        return s.ours_input(x), y

    def _fn(self, kind: str, rows: int) -> Callable[[], None]:
        s = self.s
        x, y = self._input(rows)
        student, teacher = s.student, s.teacher
        # The floor: on a GPU one call over all rows; on the CPU calls of one batch each, the fastest
        # way there (per row, calls over thousands of rows are 2-3x slower: caches).
        size = rows if s.device.type == "cuda" else s.batch
        chunks = [(x[i : i + size], y[i : i + size]) for i in range(0, rows, size)]

        def attack(model: nn.Module) -> Callable[[], None]:
            def run() -> None:
                with attack_mode(model):
                    for xc, yc in chunks:
                        u = xc.detach().requires_grad_(True)
                        with s.autocast():
                            loss = F.cross_entropy(model(u).float(), yc, reduction="sum")
                        torch.autograd.grad(loss, u)

            return run

        def forward(model: nn.Module) -> Callable[[], None]:
            def run() -> None:
                model.eval()
                with torch.no_grad(), s.autocast():
                    for xc, _ in chunks:
                        model(xc)

            return run

        def train() -> None:
            student.train()
            with s.autocast():
                loss = sum(F.cross_entropy(student(xc).float(), yc, reduction="sum") for xc, yc in chunks) / rows
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()

        def nce_gather() -> None:
            bank = self._bank()
            flat = self._negatives(rows).reshape(-1)
            for _ in range(2):  # the student bank and the teacher bank
                bank.index_select(0, flat)

        def nce_critic() -> None:
            gathered = self._gathered(rows)
            z = torch.randn(rows, gathered.shape[-1], device=s.device, requires_grad=True)
            scores = torch.einsum("bkd,bd->bk", gathered, z)
            torch.autograd.grad(F.logsigmoid(scores).sum(), z)

        return {
            "nce_gather": nce_gather,
            "nce_critic": nce_critic,
            "student_attack": attack(student),
            "teacher_attack": attack(teacher),
            "student_forward": forward(student),
            "teacher_forward": forward(teacher),
            "student_train": train,
        }[kind]

    # gacd's NCE critic: K = 4096 memory-bank negatives of 128-d embeddings per sample (the defaults)
    def _bank(self) -> Tensor:
        if not hasattr(self, "_bank_tensor"):
            self._bank_tensor = F.normalize(torch.randn(self.s.num_samples, 128, device=self.s.device), dim=1)
        return self._bank_tensor

    def _negatives(self, rows: int) -> Tensor:
        return torch.randint(0, self.s.num_samples, (rows, 4096), device=self.s.device)

    def _gathered(self, rows: int) -> Tensor:
        if not hasattr(self, "_gathered_tensor") or self._gathered_tensor.shape[0] != rows:
            self._gathered_tensor = self._bank().index_select(0, self._negatives(rows).reshape(-1)).view(rows, 4096, -1)
        return self._gathered_tensor

    def time(self, kind: str, rows: int) -> float:
        """One timing of the pass (built and warmed up on first use)."""
        key = (kind, rows)
        if key not in self.fns:
            self.fns[key] = self._fn(kind, rows)
            self.fns[key]()  # warm-up
        return time_once(self.fns[key], self.s.device)


def unavoidable(name: str, s: Setup) -> list[tuple[str, int, int]]:
    """`(pass kind, rows, count)` of the passes `name` cannot do without (one training step)."""
    b, k = s.batch, s.steps
    attack = [("student_attack", b, k)]
    plans: dict[str, list[tuple[str, int, int]]] = {
        "pgd-at": [*attack, ("student_train", b, 1)],
        "trades": [("student_forward", b, 1), *attack, ("student_train", 2 * b, 1)],
        "mart": [*attack, ("student_train", 2 * b, 1)],
        "kd": [("teacher_forward", b, 1), ("student_train", b, 1)],
        "ard": [*attack, ("teacher_forward", b, 1), ("student_train", b, 1)],
        "iad": [*attack, ("teacher_forward", 2 * b, 1), ("student_train", 2 * b, 1)],
        "rslad": [("teacher_forward", b, 1), *attack, ("student_train", 2 * b, 1)],
        "adaad": [*attack, ("teacher_attack", b, k), ("teacher_forward", b, 1), ("student_train", b, 1)],
        "mtard": [*attack, ("teacher_forward", b, 2), ("student_train", 2 * b, 1)],
        "paths": [
            ("teacher_forward", b, 1),
            ("student_attack", 2 * b, k),
            ("teacher_forward", 2 * k * b, 1),
            ("student_train", (2 * k + 1) * b, 1),
        ],
        # + the NCE critic (one (B, K, d) bank read forward and one backward per use): gathered once, used
        # against the moving student embedding at each attack step and twice in the loss
        "gacd": [
            ("teacher_forward", b, 1),
            *attack,
            ("student_train", b, 1),
            ("nce_gather", b, 1),
            ("nce_critic", b, k + 2),
        ],
    }
    return plans[name]


# ============================================================================ the benchmark


def measure(name: str, s: Setup, passes: Passes, repeats: int, *, variant: bool = False) -> dict[str, Any]:
    """Ours, the reference and the unavoidable passes, interleaved; with `variant`, also ours with
    channels_last switched the other way (student, teachers and input), as the run config would."""
    ours = make_ours(name, s)
    reference = make_reference(name, s)
    other = make_ours(name, dataclasses.replace(s, channels_last=not s.channels_last)) if variant else None
    ours()  # warm-up (first-call allocations, autotuning)
    reference()
    if other is not None:
        other()
    other_times: list[float] = []
    plan = unavoidable(name, s)
    ours_times: list[float] = []
    reference_times: list[float] = []
    pass_times: dict[tuple[str, int], list[float]] = {(kind, rows): [] for kind, rows, _ in plan}
    for _ in range(repeats):  # interleaved: slow drifts of a shared machine hit all three alike
        ours_times.append(time_once(ours, s.device))
        reference_times.append(time_once(reference, s.device))
        if other is not None:
            other_times.append(time_once(other, s.device))
        for key, times in pass_times.items():
            times.append(passes.time(*key))
    with peak_memory(s.device) as ours_memory:
        ours()
    with peak_memory(s.device) as reference_memory:
        reference()
    parts = [
        {"pass": kind, "rows": rows, "count": count, "seconds": count * min(pass_times[(kind, rows)])}
        for kind, rows, count in plan
    ]
    ours_s, reference_s = min(ours_times), min(reference_times)  # best of N, as timeit: noise only adds time
    unavoidable_s = sum(p["seconds"] for p in parts)
    extra: dict[str, Any] = {}
    if other_times:
        extra = {
            "variant_channels_last": not s.channels_last,
            "variant_s": min(other_times),
            "variant_over_reference": min(other_times) / reference_s,
            "variant_times_s": other_times,
        }
    return {
        "ours_s": ours_s,
        "reference_s": reference_s,
        "unavoidable_s": unavoidable_s,
        "ours_over_reference": ours_s / reference_s,
        "ours_over_unavoidable": ours_s / unavoidable_s,
        "meets_reference_target": ours_s / reference_s <= TARGET_REFERENCE,
        "meets_unavoidable_target": ours_s / unavoidable_s <= TARGET_UNAVOIDABLE,
        "ours_images_per_s": s.batch / ours_s,
        "reference_images_per_s": s.batch / reference_s,
        "ours_peak_mib": ours_memory.get("peak_mib"),
        "reference_peak_mib": reference_memory.get("peak_mib"),
        "ours_median_s": statistics.median(ours_times),
        "reference_median_s": statistics.median(reference_times),
        "ours_times_s": ours_times,
        "reference_times_s": reference_times,
        "unavoidable_passes": parts,
        "reference_style": (make_reference_doc(name)),
        **extra,
    }


def make_reference_doc(name: str) -> str:
    fn = globals()[f"ref_{name.replace('-', '_')}"]
    return " ".join((fn.__doc__ or "").split())


def parse_variant(text: str) -> tuple[str, str, dict[str, Any]]:
    """`LABEL=METHOD` or `LABEL=METHOD:key=value;key=value` -> (label, method, options)."""
    label, sep, spec = text.partition("=")
    if not sep or not label.strip():
        raise SystemExit(f"--variant '{text}' is not of the form LABEL=METHOD:key=value;key=value")
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(";"))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant '{text}': option '{item}' is not of the form key=value")
        options[key.strip()] = parse_value(value)
    return label.strip(), name.strip(), options


def measure_variants(
    variants: list[tuple[str, str, dict[str, Any]]], s: Setup, repeats: int, baseline: str
) -> dict[str, Any]:
    """Ours of the baseline and of every variant, interleaved repeat by repeat; best of the repeats,
    in wall-clock and in process CPU seconds (`time_both`)."""
    steps = {"baseline": make_ours(baseline, s), **{label: make_ours(name, s, opts) for label, name, opts in variants}}
    for fn in steps.values():
        fn()  # warm-up
    wall: dict[str, list[float]] = {label: [] for label in steps}
    cpu: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(repeats):
        for label, fn in steps.items():
            w, c = time_both(fn, s.device)
            wall[label].append(w)
            cpu[label].append(c)
    baseline_s, baseline_cpu_s = min(wall["baseline"]), min(cpu["baseline"])
    rows: dict[str, Any] = {}
    for label, name, opts in variants:
        with peak_memory(s.device) as memory:
            steps[label]()
        best, best_cpu = min(wall[label]), min(cpu[label])
        rows[label] = {
            "method": name,
            "options": opts,
            "ours_s": best,
            "ours_median_s": statistics.median(wall[label]),
            "ours_times_s": wall[label],
            "ours_cpu_s": best_cpu,
            "ours_cpu_times_s": cpu[label],
            "over_baseline": best / baseline_s,
            "over_baseline_cpu": best_cpu / baseline_cpu_s,
            "meets_target": best_cpu / baseline_cpu_s <= TARGET_VARIANT,
            "ours_images_per_s": s.batch / best,
            "ours_peak_mib": memory.get("peak_mib"),
        }
        print(
            f"{label:24s} ours {best:.3f}s wall {best_cpu:.3f}s cpu  {baseline} {baseline_s:.3f}s wall "
            f"{baseline_cpu_s:.3f}s cpu  ratio {best / baseline_s:.2f} wall {best_cpu / baseline_cpu_s:.2f} cpu",
            flush=True,
        )
    return {
        "baseline": baseline,
        "baseline_s": baseline_s,
        "baseline_cpu_s": baseline_cpu_s,
        "baseline_times_s": wall["baseline"],
        "baseline_cpu_times_s": cpu["baseline"],
        "target": TARGET_VARIANT,
        "rows": rows,
    }


def variants_markdown(section: dict[str, Any], number: int) -> list[str]:
    """One run of configurations against a baseline (`variant_runs` of a record) as markdown lines."""
    settings, v = section["settings"], section
    cpu = "baseline_cpu_s" in v  # runs before `time_both` have wall-clock times only
    lines = [
        "",
        f"## Configurations against `{v['baseline']}`, run {number} (measured in one run)",
        "",
        f"Command: `{section['command']}`",
        "",
        f"Machine: {section['machine'].get('gpu') or section['machine']['cpu']}, {section['machine']['torch_threads']} "
        f"torch threads, load average at start {section['machine'].get('load_average_at_start')}. Student "
        f"`{settings['student']}` {settings['student_opts'] or ''}, teacher `{settings['teacher']}` (width "
        f"{settings['teacher_width']}), batch {settings['batch']}, PGD K = {settings['steps']}, "
        f"best of {settings['repeats']} interleaved repeats; `{v['baseline']}` took {v['baseline_s']:.3f} s/step "
        + (f"({v['baseline_cpu_s']:.3f} CPU s) " if cpu else "")
        + "in this run.",
        "",
    ]
    if cpu:
        lines += [
            f"| configuration | method | options | ours (s/step) | ours (CPU s/step) | over {v['baseline']}, wall | "
            f"over {v['baseline']}, CPU (target <= {v['target']}) | ours peak MiB |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
    else:
        lines += [
            f"| configuration | method | options | ours (s/step) | over {v['baseline']} (target <= {v['target']}) | "
            "ours img/s | ours peak MiB |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
    for label, r in v["rows"].items():
        options = "; ".join(f"{k}={val}" for k, val in r["options"].items()) or "(defaults)"
        ok = "yes" if r["meets_target"] else "**no**"
        if cpu:
            lines.append(
                f"| {label} | {r['method']} | `{options}` | {r['ours_s']:.3f} | {r['ours_cpu_s']:.3f} | "
                f"{r['over_baseline']:.2f} | {r['over_baseline_cpu']:.2f} ({ok}) | {r['ours_peak_mib']:.0f} |"
            )
        else:
            lines.append(
                f"| {label} | {r['method']} | `{options}` | {r['ours_s']:.3f} | {r['over_baseline']:.2f} ({ok}) | "
                f"{r['ours_images_per_s']:.0f} | {r['ours_peak_mib']:.0f} |"
            )
    return lines + ([""] + section["notes"] if section.get("notes") else [])


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = os.getloadavg()
    return info


def markdown(result: dict[str, Any]) -> str:
    settings, rows = result["settings"], result["methods"]
    lines = [
        f"# Training-step speed: {settings['device']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine'].get('gpu') or result['machine']['cpu']}, "
        f"{result['machine']['cpu_count']} CPU cores, {result['machine']['torch_threads']} torch threads, "
        f"torch {result['machine']['torch']}; load average at start {result['machine'].get('load_average_at_start')}.",
        "",
        f"Student `{settings['student']}`, teacher `{settings['teacher']}` (width {settings['teacher_width']}), "
        f"batch {settings['batch']} of synthetic {settings['image_shape']} tensors, PGD K = {settings['steps']}, "
        f"best of {settings['repeats']} interleaved repeats. Ours: "
        f"{'bf16 autocast' if settings['bf16'] else 'fp32'}, "
        f"{'channels_last' if settings['channels_last'] else 'NCHW'}; reference: fp32, NCHW, eager.",
        "",
        f"| method | ours (s/step) | reference (s/step) | unavoidable (s/step) | ours / reference "
        f"(target <= {TARGET_REFERENCE}) | ours / unavoidable (target <= {TARGET_UNAVOIDABLE}) | ours img/s | "
        "reference img/s | ours peak MiB | reference peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    variant = any("variant_s" in r for r in rows.values())
    if variant:
        layout = "channels_last" if not settings["channels_last"] else "NCHW"
        lines[-2] += f" ours with {layout} (s/step) | that / reference |"
        lines[-1] = lines[-1] + "---:|---:|"
    for name, r in rows.items():
        ok_ref = "yes" if r["meets_reference_target"] else "**no**"
        ok_un = "yes" if r["meets_unavoidable_target"] else "**no**"
        lines.append(
            f"| {name} | {r['ours_s']:.3f} | {r['reference_s']:.3f} | {r['unavoidable_s']:.3f} | "
            f"{r['ours_over_reference']:.2f} ({ok_ref}) | {r['ours_over_unavoidable']:.2f} ({ok_un}) | "
            f"{r['ours_images_per_s']:.0f} | {r['reference_images_per_s']:.0f} | "
            f"{r['ours_peak_mib']:.0f} | {r['reference_peak_mib']:.0f} |"
            + (f" {r['variant_s']:.3f} | {r['variant_over_reference']:.2f} |" if "variant_s" in r else "")
        )
    if result.get("projections"):
        lines += ["", "Projected wall-clock time of a full CIFAR-10 run (50,000 images, drop_last):", ""]
        for name, p in result["projections"].items():
            lines.append(f"- `{name}`: {p['epochs']} epochs x {p['steps_per_epoch']} steps -> {p['hours']:.1f} h")
    lines += ["", "Reference loops (see `benchmarks/speed.py`):", ""]
    lines += [f"- `{name}`: {r['reference_style']}" for name, r in rows.items()]
    lines += ["", "Unavoidable passes per step (rows x count):", ""]
    for name, r in rows.items():
        parts = ", ".join(f"{p['pass']}({p['rows']}) x {p['count']}" for p in r["unavoidable_passes"])
        lines.append(f"- `{name}`: {parts}")
    if result.get("notes"):
        lines += ["", *result["notes"]]
    for number, section in enumerate(result.get("variant_runs", []), start=1):
        lines += variants_markdown(section, number)
    return "\n".join(lines) + "\n"


def cpu_notes(args: argparse.Namespace) -> list[str]:
    notes = [
        "CPU run: ours runs as `fit` does by default on a CPU (fp32, `amp: auto` and `channels_last: auto` "
        "switch bf16 and channels_last on for GPUs only), so in the main columns ours can beat the reference "
        "only by doing fewer network passes. No GPU was available: no GPU figures are recorded here.",
        "Peak memory on the CPU is the highest running sum of tensor allocations minus frees during one "
        "extra, untimed step, from `torch.profiler`'s memory events: the tensor memory the step needs above "
        "what was held before it (the CPU counterpart of `max_memory_allocated`; the process's resident size "
        "also holds the allocator's cached pages and the libraries). The profiler does not see the freeing of "
        "blocks allocated before the step (the previous step's gradients), so the figure can exceed the true "
        "peak by at most their size (the parameters' size, under 2 MiB for these models).",
    ]
    if args.also_other_layout:
        notes.append(
            "The last two columns time ours with `channels_last: on` (student, teachers and inputs in NHWC, "
            "oneDNN kernels), interleaved with the other columns."
        )
    return notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--student", default=None, help="default: smallcnn on CPU, resnet-18 on GPU")
    parser.add_argument("--teacher", default=None, help="default: preact-resnet-18 on CPU, wrn-34-10 on GPU")
    parser.add_argument("--student-width", type=float, default=None)
    parser.add_argument("--teacher-width", type=float, default=None, help="channel multiplier of the teacher")
    parser.add_argument(
        "--student-opt", action="append", default=[], help="student model option key=value (repeatable)"
    )
    parser.add_argument("--steps", type=int, default=10, help="PGD steps K")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--image-shape", default=None, help="CxHxW (default 1x28x28 on CPU, 3x32x32 on GPU)")
    parser.add_argument("--num-samples", type=int, default=None, help="training-set size for gacd's memory bank")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the projected CIFAR-10 run (GPU)")
    parser.add_argument("--fp32", action="store_true", help="no bf16 autocast for ours on GPU")
    parser.add_argument(
        "--channels-last",
        choices=("auto", "on", "off"),
        default="auto",
        help="ours in channels_last (the run config's key; auto = on a GPU only)",
    )
    parser.add_argument(
        "--also-other-layout",
        action="store_true",
        help="also time ours with channels_last switched (on CPU: channels_last=on), interleaved",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path; a .md table is written beside it")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="LABEL=METHOD:key=value;key=value, timed against --baseline (repeatable)",
    )
    parser.add_argument("--baseline", default="ard", help="the method the variants are timed against")
    parser.add_argument(
        "--add-to", type=Path, default=None, help="store the variants into this recorded JSON (and its .md)"
    )
    parser.add_argument("--note", action="append", default=[], help="a sentence for the variants' record")
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.student_opts = {k.strip(): parse_value(v) for k, _, v in (o.partition("=") for o in args.student_opt)}
    args.student = args.student or ("resnet-18" if gpu else "smallcnn")
    args.teacher = args.teacher or ("wrn-34-10" if gpu else "preact-resnet-18")
    args.num_samples = args.num_samples or (CIFAR10_TRAIN if gpu else 60_000)
    if gpu and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is available")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = build_setup(args)
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    variants = [parse_variant(text) for text in args.variant]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown method(s): {', '.join(unknown)}")
    passes = Passes(s)
    command = "python benchmarks/speed.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for name in names:
        results[name] = measure(name, s, passes, args.repeats, variant=args.also_other_layout)
        r = results[name]
        print(
            f"{name:7s} ours {r['ours_s']:.3f}s  reference {r['reference_s']:.3f}s  "
            f"unavoidable {r['unavoidable_s']:.3f}s  ours/ref {r['ours_over_reference']:.2f}  "
            f"ours/unavoidable {r['ours_over_unavoidable']:.2f}",
            flush=True,
        )
    projections = {}
    if s.device.type == "cuda":
        steps_per_epoch = CIFAR10_TRAIN // s.batch
        for name in ("rslad", "paths"):
            if name in results:
                seconds = results[name]["ours_s"] * steps_per_epoch * args.epochs
                projections[name] = {"epochs": args.epochs, "steps_per_epoch": steps_per_epoch, "hours": seconds / 3600}
    if variants:
        section = {
            "command": command,
            "machine": machine_info(s.device),
            "settings": {
                "device": str(s.device),
                "batch": s.batch,
                "steps": s.steps,
                "repeats": args.repeats,
                "student": args.student,
                "student_opts": args.student_opts,
                "teacher": args.teacher,
                "teacher_width": args.teacher_width if args.teacher_width is not None else 1.0,
            },
            **measure_variants(variants, s, args.repeats, args.baseline),
            "notes": args.note,
        }
        if args.add_to is not None:
            recorded = json.loads(args.add_to.read_text())
            recorded.setdefault("variant_runs", []).append(section)
            args.add_to.write_text(json.dumps(recorded, indent=2) + "\n")
            args.add_to.with_suffix(".md").write_text(markdown(recorded))
            print(f"added the variants to {args.add_to} and {args.add_to.with_suffix('.md')}")
    notes = cpu_notes(args) if s.device.type == "cpu" else []
    result = {
        "command": command,
        "machine": machine_info(s.device),
        "settings": {
            "device": str(s.device),
            "batch": s.batch,
            "steps": s.steps,
            "student": args.student,
            "teacher": args.teacher,
            "teacher_width": args.teacher_width if args.teacher_width is not None else 1.0,
            "image_shape": "x".join(str(v) for v in s.x.shape[1:]),
            "repeats": args.repeats,
            "bf16": s.low_precision,
            "channels_last": s.channels_last,
            "eps": s.eps,
            "num_samples": s.num_samples,
        },
        "methods": results,
        "projections": projections,
        "seconds_total": time.perf_counter() - started,
        "notes": notes,
        **({"variant_runs": [section]} if variants else {}),
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(result))
        print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
