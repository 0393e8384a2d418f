"""Distillation along untargeted and targeted adversarial paths (Dong, Koniusz, Chen, Wang & Ong,
"Robust Distillation via Untargeted and Targeted Intermediate Adversarial Samples", CVPR 2024).

Only the paper's abstract is available: the formulas below are the project's reconstruction
(METHODS.md, Method A); `docs/methods/paths.md` separates the paper's statements from our choices.

    t_i ≠ y_i                                      target: random | teacher-runner-up | least-likely
    u_0 = x + U(−eps, eps),  u_{k+1} = Proj(u_k + step·sign ∇ L_u(u_k)),    L_u = CE(S(u), y) (inner_loss)
    v_0 = x + U(−eps, eps),  v_{k+1} = Proj(v_k − step·sign ∇ CE(S(v_k), t))  both branches: one 2B batch
    l^b_{i,k} = KL(p_T(z_{i,k}) ‖ p_S(z_{i,k}))                    z = u (b = u) or v (b = t), k ∈ aligned steps
    w^b_{i,k} = softmax_k(l^b_{i,k} / gamma) · p_T(y_i | z_{i,k})^rho, renormalised over k  (detached)
    L = lambda_nat·KL(p_T(x) ‖ p_S(x)) + lambda_u·mean_i Σ_k w^u l^u + lambda_t·mean_i Σ_k w^t l^t

Defaults: inner_loss = ce, target = random, every step aligned, adaptive weights with gamma = rho = 1,
lambda_nat = 1/6, lambda_u = lambda_t = 5/12, both branches.

Choices of this reconstruction: aligned steps are 1-based (step k is the iterate after k PGD steps,
z_K the final example); `least-likely` is the teacher's least probable class on clean x; `weighting=last`
aligns only the last aligned step; the adaptive weights are computed as softmax_k(l/gamma + rho·log p_T(y|z)),
the renormalised product without underflow. Cheap configurations (docs/methods/paths.md): `sample_steps = m`
aligns m of the aligned steps drawn per batch (uniformly, without replacement, from a private generator
whose state is in the checkpoint); `share_forward` reuses the attack's student forward at z_k (k < K) as
the alignment forward of z_k, exact only for a student whose train- and eval-mode outputs agree (no
BatchNorm, Dropout or tracked InstanceNorm: `train_mode_dependent`). `chunk_size` splits the alignment batch
without changing the loss or gradients, except through BatchNorm batch statistics of a student in train
mode (on the CPU, 0 still splits where that changes nothing: `_chunk_sizes`). The per-epoch diagnostics
are plain tensors, not buffers: a run resumed mid-epoch restarts their averages.
"""

from __future__ import annotations

import math
import operator
import re
import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import InnerLoss, get_threat, initial_point, pgd_path
from robustdistill.errors import ConfigError
from robustdistill.methods.base import AttackSettings, Method, check_choice, check_positive, kl_div
from robustdistill.methods.registry import register_method

INNER_LOSSES = ("ce", "kl-clean", "kl-moving")
TARGETS = ("random", "teacher-runner-up", "least-likely")
WEIGHTINGS = ("adaptive", "uniform", "last")
BRANCHES = ("both", "untargeted", "targeted")


def parse_aligned_steps(value: Any, steps: int) -> tuple[int, ...]:
    """The aligned steps as 1-based indices into the path `(z_1 .. z_K)`: step k is the iterate after k steps.

    Accepts "all", a list of integers, one integer, or a string such as "2,4,6" (commas or spaces,
    optional brackets). Indices must lie in 1..K, be unique and be given in increasing order.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "all":
            return tuple(range(1, steps + 1))
        items = [item for item in re.split(r"[,\s]+", text.strip("[]() ")) if item]
        try:
            numbers = [int(item) for item in items]
        except ValueError:
            raise ConfigError(
                f"option 'aligned_steps' must be 'all' or step indices such as '2,4,6'; got {value!r}"
            ) from None
    elif isinstance(value, (list, tuple)):
        numbers = []
        for item in value:
            try:
                if isinstance(item, bool):
                    raise TypeError
                numbers.append(operator.index(item))
            except TypeError:
                raise ConfigError(f"option 'aligned_steps' must hold integers, got {item!r} in {value!r}") from None
    elif not isinstance(value, bool) and isinstance(value, int):
        numbers = [int(value)]
    else:
        raise ConfigError(f"option 'aligned_steps' must be 'all' or a list of step indices, got {value!r}")
    if not numbers:
        raise ConfigError("option 'aligned_steps' is empty: give 'all' or at least one step index")
    for k in numbers:
        if not 1 <= k <= steps:
            raise ConfigError(
                f"option 'aligned_steps' holds 1-based step indices in 1..{steps} (steps={steps}); got {k}"
            )
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"option 'aligned_steps' repeats a step index: {numbers}")
    if numbers != sorted(numbers):
        raise ConfigError(f"option 'aligned_steps' must be in increasing order, e.g. {sorted(numbers)}; got {numbers}")
    return tuple(numbers)


def choose_targets(rule: str, teacher_logits: Tensor, y: Tensor) -> Tensor:
    """One target class `t_i ≠ y_i` per sample, shape (B,).

    random: uniform over the C − 1 other classes; teacher-runner-up: the teacher's most probable class
    other than y on the clean input; least-likely: the teacher's least probable class (never y).
    """
    num_classes = teacher_logits.shape[1]
    if num_classes < 2:
        raise ConfigError("the targeted branch needs at least two classes")
    if rule == "random":
        offset = torch.randint(1, num_classes, y.shape, device=y.device)
        return (y + offset) % num_classes
    logits = teacher_logits.detach().float()
    true_class = F.one_hot(y, num_classes).bool()
    if rule == "teacher-runner-up":
        return logits.masked_fill(true_class, float("-inf")).argmax(dim=1)
    if rule == "least-likely":
        return logits.masked_fill(true_class, float("inf")).argmin(dim=1)
    raise ConfigError(f"option 'target' must be one of {', '.join(TARGETS)}; got '{rule}'")


def path_weights(kl: Tensor, log_reliability: Tensor, *, weighting: str, gamma: float, rho: float) -> Tensor:
    """Detached weights over the aligned steps (dim 0) for each column (one sample of one branch).

    `kl` and `log_reliability` (`log p_T(y | z)`) have shape (m, n). adaptive: `softmax_k(l / gamma) ·
    p_T(y|z)^rho` renormalised over k, computed as `softmax_k(l / gamma + rho · log p_T(y|z))`, the same
    value without underflow (a row of tiny reliabilities cannot become all-zero); a column that is
    not finite (non-finite teacher or student logits) falls back to uniform. uniform: 1/m.
    last: one-hot on the last row.
    """
    kl = kl.detach().float()
    steps = kl.shape[0]
    if weighting == "uniform":
        return torch.full_like(kl, 1.0 / steps)
    if weighting == "last":
        weights = torch.zeros_like(kl)
        weights[-1] = 1.0
        return weights
    scores = kl / gamma
    if rho != 0:
        scores = scores + rho * log_reliability.detach().float()
    weights = torch.softmax(scores, dim=0)
    finite = torch.isfinite(weights).all(dim=0, keepdim=True)
    return torch.where(finite, weights, torch.full_like(weights, 1.0 / steps))


#: layers whose output depends on `training`: Dropout masks, BatchNorm batch statistics, tracked InstanceNorm
_TRAIN_MODE_LAYERS = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def train_mode_dependent(model: nn.Module) -> list[str]:
    """Names of the sub-modules whose output differs between train and eval mode (empty: none).

    Dropout with p > 0 (a random mask in train mode), BatchNorm (batch statistics in train mode,
    running ones in eval mode) and InstanceNorm with `track_running_stats`. A custom layer that reads
    `self.training` (such as a functional dropout) is not detected.
    """
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.instancenorm._InstanceNorm) and not module.track_running_stats:
            continue
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p == 0:
            continue
        if isinstance(module, _TRAIN_MODE_LAYERS):
            found.append(f"{name or type(model).__name__} ({type(module).__name__})")
    return found


class DualBranchLoss(InnerLoss):
    """The per-sample objective of both branches on one batch `[untargeted rows; targeted rows]`.

    Untargeted rows (the first `n_untargeted`): `L_u` with labels `y` (ce: `CE(S(u), y)`; kl-clean:
    `KL(p_T(x) ‖ p_S(u))`; kl-moving: `KL(p_T(u) ‖ p_S(u))`, the input gradient flowing through the
    teacher as in `attacks.KLToModel`'s default). Targeted rows: `CE(S(v), t)` with labels `t`; PGD
    descends it through a sign of −1. One student forward serves both branches.
    """

    name: ClassVar[str] = "paths-dual-branch"

    def __init__(
        self,
        inner_loss: str,
        n_untargeted: int,
        *,
        teacher: nn.Module | None = None,
        teacher_clean_logits: Tensor | None = None,
    ) -> None:
        self.inner_loss = inner_loss
        self.n_untargeted = int(n_untargeted)
        self.teacher = teacher
        self.teacher_clean_logits = None if teacher_clean_logits is None else teacher_clean_logits.detach()

    def __call__(self, model: nn.Module, x_adv: Tensor, labels: Tensor) -> Tensor:
        return self.of_logits(model(x_adv).float(), x_adv, labels)

    def of_logits(self, logits: Tensor, x_adv: Tensor, labels: Tensor) -> Tensor:
        """The per-sample objective from the student's logits at `x_adv` (float32)."""
        values = F.cross_entropy(logits, labels, reduction="none")
        n = self.n_untargeted
        if n == 0 or self.inner_loss == "ce":
            return values
        if self.inner_loss == "kl-clean":
            assert self.teacher_clean_logits is not None
            untargeted = kl_div(self.teacher_clean_logits, logits[:n])
        else:
            assert self.teacher is not None
            untargeted = kl_div(self.teacher(x_adv[:n]), logits[:n])
        return torch.cat([untargeted, values[n:]])

    @property
    def extra_models(self) -> tuple[nn.Module, ...]:
        return (self.teacher,) if self.inner_loss == "kl-moving" and self.teacher is not None else ()


@register_method("paths", aliases=("dong2024",))
class AdversarialPaths(Method):
    """Align teacher and student on the intermediate points of an untargeted and a targeted PGD path,
    each point weighted by its teacher-student disagreement and the teacher's reliability."""

    needs_teacher = True

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        inner_loss: str = "ce",
        target: str = "random",
        aligned_steps: str | int | list[int] = "all",
        weighting: str = "adaptive",
        gamma: float = 1.0,
        rho: float = 1.0,
        lambda_nat: float = 1 / 6,
        lambda_u: float = 5 / 12,
        lambda_t: float = 5 / 12,
        branches: str = "both",
        chunk_size: int = 0,
        sample_steps: int = 0,
        share_forward: bool = False,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
    ) -> None:
        super().__init__(teacher=teacher)
        self.inner_loss = check_choice("inner_loss", _word(inner_loss), INNER_LOSSES)
        self.target = check_choice("target", _word(target), TARGETS)
        self.weighting = check_choice("weighting", _word(weighting), WEIGHTINGS)
        self.branches = check_choice("branches", _word(branches), BRANCHES)
        self.gamma = _check_finite("gamma", gamma, allow_zero=False)
        self.rho = _check_finite("rho", rho, allow_zero=True)
        self.lambda_nat = _check_finite("lambda_nat", lambda_nat, allow_zero=True)
        self.lambda_u = _check_finite("lambda_u", lambda_u, allow_zero=True)
        self.lambda_t = _check_finite("lambda_t", lambda_t, allow_zero=True)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
            raise ConfigError(f"option 'chunk_size' must be an integer >= 0 (0 = one batch), got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.attack = AttackSettings(eps=eps, step_size=step_size, steps=steps, norm=norm)
        if self.attack.steps > 1 and self.attack.step_size > self.attack.eps:
            warnings.warn(
                f"paths: step_size ({self.attack.step_size:.6g}) is larger than eps ({self.attack.eps:.6g}) "
                "with more than one step: are the two swapped?",
                UserWarning,
                stacklevel=2,
            )
        self.aligned_steps = parse_aligned_steps(aligned_steps, self.attack.steps)
        self._all_steps = self.aligned_steps == tuple(range(1, self.attack.steps + 1))
        if isinstance(sample_steps, bool) or not isinstance(sample_steps, int) or sample_steps < 0:
            raise ConfigError(
                f"option 'sample_steps' must be an integer >= 0 (0 = align every aligned step), got {sample_steps!r}"
            )
        if sample_steps and self.weighting == "last":
            raise ConfigError(
                "option 'sample_steps' samples among the aligned steps; weighting=last aligns one: drop one of the two"
            )
        if sample_steps and sample_steps >= len(self.aligned_steps):
            raise ConfigError(
                f"option 'sample_steps' ({sample_steps}) must be smaller than the number of aligned steps "
                f"({len(self.aligned_steps)}: {list(self.aligned_steps)}); 0 aligns them all"
            )
        self.sample_steps = sample_steps
        if not isinstance(share_forward, bool):
            raise ConfigError(f"option 'share_forward' must be true or false, got {share_forward!r}")
        if share_forward and self.chunk_size:
            raise ConfigError(
                "option 'share_forward' aligns the attack's own forward passes: it cannot be chunked (chunk_size=0)"
            )
        self.share_forward = share_forward
        # the steps drawn per batch: a private stream, seeded from torch's (so by --seed), state in the checkpoint
        self._step_generator = torch.Generator()
        if sample_steps:
            self._step_generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.untargeted = self.branches in ("both", "untargeted")
        self.targeted = self.branches in ("both", "targeted")
        enabled = [self.lambda_nat, self.lambda_u if self.untargeted else 0.0, self.lambda_t if self.targeted else 0.0]
        if sum(enabled) == 0:
            raise ConfigError("every loss weight of the enabled terms is 0: raise lambda_nat, lambda_u or lambda_t")
        self._reset_diagnostics()

    # ------------------------------------------------------------------ the two branches

    @property
    def branch_names(self) -> tuple[str, ...]:
        """Short names of the generated branches, in batch order: "u" (untargeted) then "t" (targeted)."""
        return tuple(name for name, on in (("u", self.untargeted), ("t", self.targeted)) if on)

    @property
    def used_steps(self) -> tuple[int, ...]:
        """The 1-based steps that go through the alignment: `aligned_steps`, or only its last with `last`."""
        return self.aligned_steps[-1:] if self.weighting == "last" else self.aligned_steps

    def draw_steps(self) -> tuple[int, ...]:
        """The steps aligned on this batch: `used_steps`, or `sample_steps` of them drawn without replacement."""
        if not self.sample_steps:
            return self.used_steps
        picks = torch.randperm(len(self.aligned_steps), generator=self._step_generator)[: self.sample_steps]
        return tuple(self.aligned_steps[i] for i in sorted(picks.tolist()))

    def _branch_batch(
        self, x: Tensor, y: Tensor, targets: Tensor | None, teacher_clean_logits: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, DualBranchLoss]:
        """The concatenated batch of the enabled branches: inputs, labels, signs (+1 ascend, −1 descend), loss."""
        inputs, labels, signs = [], [], []
        if self.untargeted:
            inputs.append(x)
            labels.append(y)
            signs.append(torch.ones(x.shape[0], device=x.device))
        if self.targeted:
            assert targets is not None
            inputs.append(x)
            labels.append(targets)
            signs.append(-torch.ones(x.shape[0], device=x.device))
        loss = DualBranchLoss(
            self.inner_loss,
            x.shape[0] if self.untargeted else 0,
            teacher=self.teacher,
            teacher_clean_logits=teacher_clean_logits,
        )
        return torch.cat(inputs), torch.cat(labels), torch.cat(signs), loss

    def generate_paths(
        self, student: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None, teacher_clean_logits: Tensor
    ) -> Tensor:
        """Both paths from one PGD run on the concatenated batch: `(K, n·B, ...)`, untargeted rows first."""
        inputs, labels, signs, loss = self._branch_batch(x, y, targets, teacher_clean_logits)
        return pgd_path(
            student,
            inputs,
            labels,
            loss,
            eps=self.attack.eps,
            step_size=self.attack.step_size,
            steps=self.attack.steps,
            norm=self.attack.norm,
            random_start="uniform",
            sign=signs,
        )

    def generate_shared_paths(
        self,
        student: nn.Module,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        teacher_clean_logits: Tensor,
        keep: tuple[int, ...],
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """`generate_paths` written out with the student in its training mode and its parameters live.

        The forward at `z_k` serves the attack step k+1 (its input gradient, graph retained) and, for
        the 1-based steps k in `keep` (all < K), the alignment of `z_k`: returns the path and those
        logits with their parameter graph. Equal to `generate_paths` because the student has no
        train-mode-dependent layer (checked) and the same random start is drawn.
        """
        dependent = train_mode_dependent(student)
        if dependent:
            raise ConfigError(
                "option 'share_forward' needs a student whose train- and eval-mode outputs agree (the attack "
                f"runs in eval mode, the alignment in train mode); these layers differ: {', '.join(dependent[:3])}"
                " (for smallcnn: model_opts.dropout=0)"
            )
        # under DDP the attack's forwards go to the bare network: the one DDP forward is the alignment's
        # (x and z_K), and each parameter's gradient, summed over all graphs, is reduced once
        network = student.module if isinstance(student, nn.parallel.DistributedDataParallel) else student
        attack = self.attack
        threat = get_threat(attack.norm)
        inputs, labels, signs, loss = self._branch_batch(x, y, targets, teacher_clean_logits)
        x32 = inputs.detach().float()
        path = torch.empty((attack.steps, *x32.shape), dtype=torch.float32, device=x32.device)
        z = initial_point(x32, attack.eps, norm=threat, random_start="uniform")
        kept: dict[int, Tensor] = {}
        for k in range(attack.steps):  # the forward at z_k (z_0 the start) gives the step to z_{k+1}
            z = z.detach().requires_grad_(True)
            logits = network(z)
            value = (loss.of_logits(logits.float(), z, labels) * signs).sum()
            (grad,) = torch.autograd.grad(value, z, retain_graph=k in keep)
            if k in keep:
                kept[k] = logits
            with torch.no_grad():
                z = threat.project(threat.step(z.detach(), grad.float(), attack.step_size), x32, attack.eps)
                path[k].copy_(z)
        return path, kept

    # ------------------------------------------------------------------ the objective

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        teacher = self.teacher
        batch = x.shape[0]
        with torch.no_grad():
            teacher_clean = teacher(x)  # reused: targets, kl-clean's soft labels, the natural term
        targets = choose_targets(self.target, teacher_clean, y) if self.targeted else None
        steps = self.draw_steps()
        shared = tuple(k for k in steps if k < self.attack.steps) if self.share_forward else ()
        if self.share_forward:
            path, kept = self.generate_shared_paths(student, x, y, targets, teacher_clean, shared)
        else:
            path, kept = self.generate_paths(student, x, y, targets, teacher_clean), {}
        if self.weighting != "last" and self._all_steps and not self.sample_steps:
            chosen = path
        else:
            chosen = path[torch.tensor([k - 1 for k in steps], device=path.device)]
        n_steps, width = chosen.shape[0], chosen.shape[1]  # width = n_branches · B
        points = chosen.flatten(0, 1).to(x.dtype)  # step-major: row s·width + j is step s, column j

        teacher_chunk, student_chunk = self._chunk_sizes(student, points, batch)
        with torch.no_grad():
            teacher_points = _chunked(teacher, points, teacher_chunk)
        teacher_all = torch.cat([teacher_clean, teacher_points])
        if self.share_forward:
            kl_all, student_pred = self._align_shared(student, x, chosen, steps, kept, teacher_all)
        else:
            kl_all, student_pred = self._align(student, torch.cat([x, points]), teacher_all, student_chunk)

        kl_nat = kl_all[:batch].mean()
        kl_path = kl_all[batch:].view(n_steps, width)
        y_columns = y.repeat(width // batch)
        log_probs = F.log_softmax(teacher_points.detach().float(), dim=1).view(n_steps, width, -1)
        log_reliability = log_probs.gather(2, y_columns.view(1, width, 1).expand(n_steps, width, 1)).squeeze(2)
        weights = path_weights(kl_path, log_reliability, weighting=self.weighting, gamma=self.gamma, rho=self.rho)
        per_sample = (weights * kl_path).sum(dim=0)  # (width,)

        loss = self.lambda_nat * kl_nat
        terms: dict[str, Tensor] = {"kl_nat": kl_nat.detach()}
        last_pred = student_pred[batch:].view(n_steps, width)[-1]
        terms["acc_clean"] = (student_pred[:batch] == y).float().mean()
        for b, name in enumerate(self.branch_names):
            columns = slice(b * batch, (b + 1) * batch)
            branch_loss = per_sample[columns].mean()
            loss = loss + (self.lambda_u if name == "u" else self.lambda_t) * branch_loss
            terms[f"path_{name}"] = branch_loss.detach()
            terms[f"acc_adv_{name}"] = (last_pred[columns] == y).float().mean()
        if self.targeted:
            assert targets is not None
            columns = slice((len(self.branch_names) - 1) * batch, len(self.branch_names) * batch)
            terms["target_success"] = (last_pred[columns] == targets).float().mean()
        self._accumulate(kl_path, weights, teacher_points, y_columns, last_pred, targets, batch, steps)
        return {"loss": loss, **terms}

    def _chunk_sizes(self, student: nn.Module, points: Tensor, batch: int) -> tuple[int, int]:
        """Rows per alignment call for the teacher and the student (0 = one call).

        `chunk_size > 0` sets both. With 0 the passes are one call each, except on the CPU, where a
        call over thousands of rows runs two to three times slower per row than calls of a batch
        (the activations no longer fit the caches): there the teacher (eval mode, so the same
        logits) and a student without BatchNorm layers in train mode (the same logits and
        gradients, up to float rounding and dropout masks, which are drawn per call) go through in
        chunks of one batch.
        """
        if self.chunk_size or points.device.type != "cpu":
            return self.chunk_size, self.chunk_size
        shared_statistics = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in student.modules()
        )
        return batch, 0 if shared_statistics else batch

    def _align(
        self, student: nn.Module, inputs: Tensor, teacher_logits: Tensor, chunk: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-sample `KL(p_T ‖ p_S)` (with grad) and the student's detached predictions, chunk by chunk."""
        size = (self.chunk_size if chunk is None else chunk) or inputs.shape[0]
        kls, preds = [], []
        for start in range(0, inputs.shape[0], size):
            logits = student(inputs[start : start + size])
            kls.append(kl_div(teacher_logits[start : start + size], logits))
            preds.append(logits.detach().argmax(dim=1))
        return torch.cat(kls), torch.cat(preds)

    def _align_shared(
        self,
        student: nn.Module,
        x: Tensor,
        chosen: Tensor,
        steps: tuple[int, ...],
        kept: dict[int, Tensor],
        teacher_logits: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """`_align` with the logits at z_k (k < K) taken from the attack; one forward over x and z_K."""
        fresh = [x] + ([chosen[-1].to(x.dtype)] if steps[-1] == self.attack.steps else [])
        logits_fresh = student(torch.cat(fresh))
        logits = torch.cat(
            [logits_fresh[: x.shape[0]], *(kept[k] for k in steps if k in kept), logits_fresh[x.shape[0] :]]
        )
        return kl_div(teacher_logits, logits), logits.detach().argmax(dim=1)

    # ------------------------------------------------------------------ per-epoch diagnostics

    def _reset_diagnostics(self) -> None:
        # Plain tensors (not buffers): per-epoch averages, not part of the checkpoint.
        self._diag: dict[str, Tensor] = {}
        self._diag_samples = 0

    def _accumulate(
        self,
        kl_path: Tensor,
        weights: Tensor,
        teacher_points: Tensor,
        y_columns: Tensor,
        last_pred: Tensor,
        targets: Tensor | None,
        batch: int,
        steps: tuple[int, ...],
    ) -> None:
        with torch.no_grad():
            n_steps, width = kl_path.shape
            n_branches = width // batch
            per_branch = (n_steps, n_branches, batch)
            wrong = (teacher_points.argmax(dim=1) != y_columns.repeat(n_steps)).float().view(per_branch)
            slots = torch.tensor([self.used_steps.index(k) for k in steps], device=kl_path.device)
            n_slots = len(self.used_steps)
            zeros = torch.zeros(n_branches, n_slots, device=kl_path.device)
            update = {  # sums per (branch, aligned step) and the samples each step was aligned on
                "weight": zeros.index_add(1, slots, weights.view(per_branch).sum(dim=2).T),
                "kl": zeros.index_add(1, slots, kl_path.detach().float().view(per_branch).sum(dim=2).T),
                "step_samples": torch.zeros(n_slots, device=kl_path.device).index_add(
                    0, slots, torch.full((n_steps,), float(batch), device=kl_path.device)
                ),
                "teacher_error": wrong.sum(dim=(0, 2)),  # (branches,)
            }
            if targets is not None:
                update["target_success"] = (last_pred[-batch:] == targets).float().sum()
            for key, value in update.items():
                if key in self._diag:
                    self._diag[key] = self._diag[key].to(value.device) + value
                else:
                    self._diag[key] = value.clone()
            self._diag_samples += batch

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._reset_diagnostics()

    def diagnostics(self) -> dict[str, float]:
        """Epoch means since the last call (then reset); see docs/methods/paths.md for the keys."""
        n = self._diag_samples
        if n == 0:
            return {}
        steps = self.used_steps
        width = max(2, len(str(self.attack.steps)))
        values = {key: value.detach().double().cpu().tolist() for key, value in self._diag.items()}
        counts = values["step_samples"]
        out: dict[str, float] = {}
        for b, name in enumerate(self.branch_names):
            for s, k in enumerate(steps):
                if counts[s]:
                    out[f"paths/weight_{name}/step_{k:0{width}d}"] = float(values["weight"][b][s]) / counts[s]
                    out[f"paths/kl_{name}/step_{k:0{width}d}"] = float(values["kl"][b][s]) / counts[s]
            out[f"paths/teacher_error_{name}"] = float(values["teacher_error"][b]) / sum(counts)
        if "target_success" in values:
            out["paths/target_success"] = float(values["target_success"]) / n
        self._reset_diagnostics()
        return out

    def options(self) -> dict[str, Any]:
        return {
            "inner_loss": self.inner_loss,
            "target": self.target,
            "aligned_steps": "all" if self._all_steps else list(self.aligned_steps),
            "weighting": self.weighting,
            "gamma": self.gamma,
            "rho": self.rho,
            "lambda_nat": self.lambda_nat,
            "lambda_u": self.lambda_u,
            "lambda_t": self.lambda_t,
            "branches": self.branches,
            "chunk_size": self.chunk_size,
            **({"sample_steps": self.sample_steps} if self.sample_steps else {}),
            **({"share_forward": True} if self.share_forward else {}),
            **self.attack.as_dict(),
        }

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        if self.sample_steps:
            state["step_generator"] = self._step_generator.get_state()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        if self.sample_steps and "step_generator" in state:
            self._step_generator.set_state(state["step_generator"])


def _word(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _check_finite(name: str, value: Any, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"option '{name}' must be a finite number, got {value!r}")
    return check_positive(name, value, allow_zero=allow_zero)


def _chunked(model: nn.Module, inputs: Tensor, chunk_size: int) -> Tensor:
    """`model(inputs)` in chunks of `chunk_size` rows (0: one call)."""
    if chunk_size == 0 or inputs.shape[0] <= chunk_size:
        return model(inputs)
    return torch.cat([model(inputs[start : start + chunk_size]) for start in range(0, inputs.shape[0], chunk_size)])
