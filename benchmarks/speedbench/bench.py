"""Set-up of the speed benchmark (networks, batch, methods), timing and peak memory, and ours: the `fit` step."""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill import methods, models
from robustdistill.attacks import shared_random_starts

#: options that differ from a method's defaults in the benchmark: iad's full objective from the first step
BENCH_OPTIONS: dict[str, dict[str, Any]] = {"iad": {"warmup_epochs": 0}}
TARGET_REFERENCE = 0.8
TARGET_UNAVOIDABLE = 1.15
TARGET_VARIANT = 2.0  # a variant's step time over the baseline's (issue 17: cheap paths at <= 2x ard)
CIFAR10_TRAIN = 50_000


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
    """Any registered method as a run builds it: the run's attack settings, the teachers it needs, the facts."""
    entry = methods.spec(name)
    run_attack = {"eps": s.eps, "step_size": s.step_size, "steps": s.steps}
    method_opts = {**BENCH_OPTIONS.get(entry.name, {}), **(extra or {})}
    options = methods.resolve_run_options(entry.name, method_opts, run_attack)
    facts = methods.RunFacts(num_samples=s.num_samples, student_dim=s.student.feature_dim)
    return entry.build(
        options,
        teacher=s.teacher if entry.needs_teacher else None,
        natural_teacher=s.natural_teacher if entry.needs_natural_teacher else None,
        facts=facts,
    ).to(s.device)


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
