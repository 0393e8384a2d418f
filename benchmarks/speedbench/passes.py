"""The unavoidable passes: each kind of network pass timed alone, and the passes each method cannot do without."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import attack_mode
from speedbench.bench import Setup, sgd, time_once


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
