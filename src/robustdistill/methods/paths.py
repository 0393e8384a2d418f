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
the renormalised product without underflow (`paths_steps.py`). Cheap configurations (docs/methods/paths.md):
`sample_steps = m` aligns m of the aligned steps drawn per batch (uniformly, without replacement, from a private
generator whose state is in the checkpoint); `share_forward` reuses the attack's student forward at z_k (k < K) as
the alignment forward of z_k, exact only for a student whose train- and eval-mode outputs agree (no
BatchNorm, Dropout or tracked InstanceNorm: `train_mode_dependent`). `chunk_size` splits the alignment batch
without changing the loss or gradients, except through BatchNorm batch statistics of a student in train
mode (on the CPU, 0 still splits where that changes nothing: `_chunk_sizes`). The branches and their
joint objective are in `paths_branches.py`, the per-epoch diagnostics in `paths_diagnostics.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import kl_div
from robustdistill.errors import ConfigError
from robustdistill.methods.attack import AttackSettings, PGDOptions
from robustdistill.methods.base import Method
from robustdistill.methods.options import Options, option
from robustdistill.methods.paths_branches import DualBranchLoss, choose_targets, train_mode_dependent
from robustdistill.methods.paths_diagnostics import PathDiagnostics
from robustdistill.methods.paths_steps import parse_aligned_steps, path_weights
from robustdistill.methods.registry import register_method


@dataclass(frozen=True)
class PathsOptions(Options):
    """The options of `paths` (defaults: METHODS.md, Method A)."""

    attack: PGDOptions = field(default_factory=PGDOptions)
    inner_loss: Literal["ce", "kl-clean", "kl-moving"] = option("ce", help="the untargeted branch's inner loss L_u")
    target: Literal["random", "teacher-runner-up", "least-likely"] = option(
        "random", help="how each sample's target class t != y is chosen"
    )
    aligned_steps: str | int | tuple[int, ...] = option(
        "all", help="1-based steps of the path that are aligned: all, or indices such as 2,4,6"
    )
    weighting: Literal["adaptive", "uniform", "last"] = option(
        "adaptive", help="weights over the aligned steps: adaptive, uniform, or the last step only"
    )
    gamma: float = option(1.0, gt=0, help="temperature of the adaptive weights' softmax over steps")
    rho: float = option(1.0, ge=0, help="exponent of the teacher's reliability p_T(y|z) in the adaptive weights")
    lambda_nat: float = option(1 / 6, ge=0, help="weight of KL(p_T(x) || p_S(x))")
    lambda_u: float = option(5 / 12, ge=0, help="weight of the untargeted path's term")
    lambda_t: float = option(5 / 12, ge=0, help="weight of the targeted path's term")
    branches: Literal["both", "untargeted", "targeted"] = option("both", help="the paths that are generated")
    chunk_size: int = option(0, ge=0, help="rows per alignment forward pass (0: one batch)")
    sample_steps: int = option(0, ge=0, help="align this many of the aligned steps, drawn per batch (0: all)")
    share_forward: bool = option(False, help="reuse the attack's student forward at z_k as its alignment forward")

    def check(self) -> None:
        steps = self.attack.steps
        aligned = parse_aligned_steps(self.aligned_steps, steps)
        self._set("aligned_steps", "all" if aligned == tuple(range(1, steps + 1)) else aligned)
        if self.sample_steps and self.weighting == "last":
            raise ConfigError(
                "option 'sample_steps' samples among the aligned steps; weighting=last aligns one: drop one of the two"
            )
        if self.sample_steps and self.sample_steps >= len(aligned):
            raise ConfigError(
                f"option 'sample_steps' ({self.sample_steps}) must be smaller than the number of aligned steps "
                f"({len(aligned)}: {list(aligned)}); 0 aligns them all"
            )
        if self.share_forward and self.chunk_size:
            raise ConfigError(
                "option 'share_forward' aligns the attack's own forward passes: it cannot be chunked (chunk_size=0)"
            )
        untargeted, targeted = self.branches in ("both", "untargeted"), self.branches in ("both", "targeted")
        if self.lambda_nat + (self.lambda_u if untargeted else 0.0) + (self.lambda_t if targeted else 0.0) == 0:
            raise ConfigError("every loss weight of the enabled terms is 0: raise lambda_nat, lambda_u or lambda_t")


@register_method("paths", aliases=("dong2024",), role="distillation", needs_teacher=True)
class AdversarialPaths(Method[PathsOptions]):
    """Align teacher and student on the intermediate points of an untargeted and a targeted PGD path,
    each point weighted by its teacher-student disagreement and the teacher's reliability."""

    def __init__(self, options: PathsOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.attack = AttackSettings(options.attack)
        self.aligned_steps = parse_aligned_steps(options.aligned_steps, options.attack.steps)
        # the steps drawn per batch: a private stream, seeded from torch's (so by --seed), state in the checkpoint
        self._step_generator = torch.Generator()
        if options.sample_steps:
            self._step_generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        self.untargeted = options.branches in ("both", "untargeted")
        self.targeted = options.branches in ("both", "targeted")
        self._diagnostics = PathDiagnostics(self.branch_names, self.used_steps, options.attack.steps)

    # ------------------------------------------------------------------ the two branches

    @property
    def branch_names(self) -> tuple[str, ...]:
        """Short names of the generated branches, in batch order: "u" (untargeted) then "t" (targeted)."""
        return tuple(name for name, on in (("u", self.untargeted), ("t", self.targeted)) if on)

    @property
    def used_steps(self) -> tuple[int, ...]:
        """The 1-based steps that go through the alignment: `aligned_steps`, or only its last with `last`."""
        return self.aligned_steps[-1:] if self.options.weighting == "last" else self.aligned_steps

    def draw_steps(self) -> tuple[int, ...]:
        """The steps aligned on this batch: `used_steps`, or `sample_steps` of them drawn without replacement."""
        if not self.options.sample_steps:
            return self.used_steps
        picks = torch.randperm(len(self.aligned_steps), generator=self._step_generator)[: self.options.sample_steps]
        return tuple(self.aligned_steps[i] for i in sorted(picks.tolist()))

    def _branch_batch(
        self, x: Tensor, y: Tensor, targets: Tensor | None, teacher_clean_logits: Tensor, keep: tuple[int, ...] = ()
    ) -> tuple[Tensor, Tensor, DualBranchLoss]:
        """The concatenated batch of the enabled branches: inputs, labels (`y` then `t`) and their objective."""
        inputs, labels = [], []
        if self.untargeted:
            inputs.append(x)
            labels.append(y)
        if self.targeted:
            assert targets is not None
            inputs.append(x)
            labels.append(targets)
        batch = x.shape[0]
        loss = DualBranchLoss(
            self.options.inner_loss,
            batch if self.untargeted else 0,
            batch if self.targeted else 0,
            device=x.device,
            teacher=self.teacher,
            teacher_clean_logits=teacher_clean_logits,
            keep=keep,
        )
        return torch.cat(inputs), torch.cat(labels), loss

    def generate_paths(
        self, student: nn.Module, x: Tensor, y: Tensor, targets: Tensor | None, teacher_clean_logits: Tensor
    ) -> Tensor:
        """Both paths from one PGD run on the concatenated batch: `(K, n·B, ...)`, untargeted rows first."""
        inputs, labels, loss = self._branch_batch(x, y, targets, teacher_clean_logits)
        return self.attack.pgd(student, loss=loss, random_start="uniform", record_path=True)(inputs, labels)

    def generate_shared_paths(
        self,
        student: nn.Module,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        teacher_clean_logits: Tensor,
        keep: tuple[int, ...],
    ) -> tuple[Tensor, dict[int, Tensor]]:
        """`generate_paths` with the student in its training mode and its parameters live (`freeze=False`).

        The forward at `z_k` serves the attack step k+1 (its input gradient) and, for the 1-based steps
        k in `keep` (all < K), the alignment of `z_k`: returns the path and those logits with their
        parameter graph. Equal to `generate_paths` because the student has no train-mode-dependent
        layer (checked) and the same random start is drawn.
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
        inputs, labels, loss = self._branch_batch(x, y, targets, teacher_clean_logits, keep)
        attack = self.attack.pgd(network, loss=loss, random_start="uniform", record_path=True, freeze=False)
        return attack(inputs, labels), loss.kept

    # ------------------------------------------------------------------ the objective

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        teacher = self.teacher
        batch = x.shape[0]
        with torch.no_grad():
            teacher_clean = teacher(x)  # reused: targets, kl-clean's soft labels, the natural term
        targets = choose_targets(self.options.target, teacher_clean, y) if self.targeted else None
        steps = self.draw_steps()
        shared = tuple(k for k in steps if k < self.attack.steps) if self.options.share_forward else ()
        if self.options.share_forward:
            path, kept = self.generate_shared_paths(student, x, y, targets, teacher_clean, shared)
        else:
            path, kept = self.generate_paths(student, x, y, targets, teacher_clean), {}
        if self.options.weighting != "last" and self.options.aligned_steps == "all" and not self.options.sample_steps:
            chosen = path
        else:
            chosen = path[torch.tensor([k - 1 for k in steps], device=path.device)]
        n_steps, width = chosen.shape[0], chosen.shape[1]  # width = n_branches · B
        points = chosen.flatten(0, 1).to(x.dtype)  # step-major: row s·width + j is step s, column j

        teacher_chunk, student_chunk = self._chunk_sizes(student, points, batch)
        with torch.no_grad():
            teacher_points = _chunked(teacher, points, teacher_chunk)
        teacher_all = torch.cat([teacher_clean, teacher_points])
        if self.options.share_forward:
            kl_all, student_pred = self._align_shared(student, x, chosen, steps, kept, teacher_all)
        else:
            kl_all, student_pred = self._align(student, torch.cat([x, points]), teacher_all, student_chunk)

        kl_nat = kl_all[:batch].mean()
        kl_path = kl_all[batch:].view(n_steps, width)
        y_columns = y.repeat(width // batch)
        log_probs = F.log_softmax(teacher_points.detach().float(), dim=1).view(n_steps, width, -1)
        log_reliability = log_probs.gather(2, y_columns.view(1, width, 1).expand(n_steps, width, 1)).squeeze(2)
        o = self.options
        weights = path_weights(kl_path, log_reliability, weighting=o.weighting, gamma=o.gamma, rho=o.rho)
        per_sample = (weights * kl_path).sum(dim=0)  # (width,)

        loss = self.options.lambda_nat * kl_nat
        terms: dict[str, Tensor] = {"kl_nat": kl_nat.detach()}
        last_pred = student_pred[batch:].view(n_steps, width)[-1]
        terms["acc_clean"] = (student_pred[:batch] == y).float().mean()
        for b, name in enumerate(self.branch_names):
            columns = slice(b * batch, (b + 1) * batch)
            branch_loss = per_sample[columns].mean()
            loss = loss + (self.options.lambda_u if name == "u" else self.options.lambda_t) * branch_loss
            terms[f"path_{name}"] = branch_loss.detach()
            terms[f"acc_adv_{name}"] = (last_pred[columns] == y).float().mean()
        if self.targeted:
            assert targets is not None
            columns = slice((len(self.branch_names) - 1) * batch, len(self.branch_names) * batch)
            terms["target_success"] = (last_pred[columns] == targets).float().mean()
        self._diagnostics.add(kl_path, weights, teacher_points, y_columns, last_pred, targets, batch, steps)
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
        if self.options.chunk_size or points.device.type != "cpu":
            return self.options.chunk_size, self.options.chunk_size
        shared_statistics = any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in student.modules()
        )
        return batch, 0 if shared_statistics else batch

    def _align(
        self, student: nn.Module, inputs: Tensor, teacher_logits: Tensor, chunk: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-sample `KL(p_T ‖ p_S)` (with grad) and the student's detached predictions, chunk by chunk."""
        size = (self.options.chunk_size if chunk is None else chunk) or inputs.shape[0]
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

    # ------------------------------------------------------------------ per-epoch diagnostics and state

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self._diagnostics.reset()

    def diagnostics(self) -> dict[str, float]:
        """Epoch means since the last call (then reset); see docs/methods/paths.md for the keys."""
        return self._diagnostics.report()

    def get_extra_state(self) -> dict[str, Any]:
        state = super().get_extra_state()
        if self.options.sample_steps:
            state["step_generator"] = self._step_generator.get_state()
        return state

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        if self.options.sample_steps and "step_generator" in state:
            self._step_generator.set_state(state["step_generator"])


def _chunked(model: nn.Module, inputs: Tensor, chunk_size: int) -> Tensor:
    """`model(inputs)` in chunks of `chunk_size` rows (0: one call)."""
    if chunk_size == 0 or inputs.shape[0] <= chunk_size:
        return model(inputs)
    return torch.cat([model(inputs[start : start + chunk_size]) for start in range(0, inputs.shape[0], chunk_size)])
