"""GACD: guided adversarial contrastive distillation (reconstruction; see docs/methods/gacd.md).

Source: Bai, Chen, Zhao, Wen, Jiang, Kot, "Feature Distillation With Guided Adversarial
Contrastive Learning", arXiv 2009.09922. Only the abstract is available to us; everything below
beyond "contrastive objective tied to mutual information, the teacher as the anchor, sample
reweighted estimation, features instead of soft labels, transfer across models and tasks" is our
reconstruction (METHODS.md, Method B).

    z_T = g_T(f_T(x))            teacher features on the clean input, trainable head, frozen backbone
    z_S = g_S(f_S(x'))           student features on the adversarial input, trainable head
    g(.) = normalise(W . + b)    Linear -> feat_dim -> L2 normalisation
    x'  = PGD maximising l(z_T, z_S(x')) with z_T fixed (adv_loss=contrast), or CE (adv_loss=ce)
    w_i = p_T(y_i | x_i)^beta / mean_j p_T(y_j | x_j)^beta     (reweight=confidence; detached)
    L   = CE(S(x'), y) + beta_c * mean_i w_i l_i + alpha_kd * KL(p_T(x) || p_S(x'))

Estimators (per sample `l_i`):

- `nce` (CRD): two directions, teacher-anchored against the student memory bank and
  student-anchored against the teacher memory bank, each
  `-log h(u_i, v_i) - sum_k log(1 - h(u_i, bank[n_ik]))` with
  `h(u, v) = e^{u.v/tau} / (e^{u.v/tau} + Z K / N)`; the positive pair is the current
  `(z_T(x_i), z_S(x'_i))`, the K negatives are bank slots of other samples drawn uniformly once per
  batch (the attack uses the same ones); `Z` is CRD's constant `N * mean e^{s/tau}`, estimated
  once from the first batch and kept in the checkpoint.
- `infonce`: teacher-anchored, in-batch: `l_i = -log softmax_j(z_T(x_i) . z_S(x'_j) / tau)[i]`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import FeatureLoss, kl_div
from robustdistill.errors import ConfigError
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.contrast import (
    BankNegatives,
    EmbedHead,
    MemoryBank,
    estimate_log_z,
    infonce_loss,
    nce_loss_from_scores,
)
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method
from robustdistill.runtime import distributed as dist


def _unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (attacks need no gradient sync)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) and not callable(getattr(model, "features", None)) else model


def logits_and_features(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """`(logits, penultimate features)` in one forward pass.

    Uses `model.forward_features`; for a DDP-wrapped classifier (which has no such method) the
    forward goes through the wrapper, so gradients are synchronised, and the features are read
    as the input of the final linear layer `fc` (`Classifier.head` is `fc(features)`).
    """
    forward_features = getattr(model, "forward_features", None)
    if callable(forward_features):
        return forward_features(x)
    inner = getattr(model, "module", None)
    fc = getattr(inner, "fc", None)
    if isinstance(fc, nn.Module):
        captured: list[Tensor] = []
        handle = fc.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0]))
        try:
            logits = model(x)
        finally:
            handle.remove()
        return logits, captured[0]
    raise ConfigError(
        f"gacd needs models with forward_features(x) -> (logits, features); {type(model).__name__} has none"
    )


@dataclass(frozen=True)
class GACDOptions(Options):
    """The options of `gacd` (defaults: METHODS.md, Method B)."""

    attack: AttackOptions = field(default_factory=AttackOptions)
    estimator: Literal["nce", "infonce"] = option("nce", help="contrastive estimator: CRD's NCE or in-batch InfoNCE")
    feat_dim: int = option(128, ge=1, help="dimension of the projected embeddings")
    nce_k: int = option(4096, ge=1, help="negatives per anchor drawn from the memory bank (nce)")
    temperature: float = option(0.07, gt=0, help="temperature of the critic's dot products")
    momentum: float = option(0.5, ge=0, lt=1, help="momentum of the memory-bank update (nce)")
    nce_scoring: Literal["auto", "rows", "dense"] = option(
        "auto", help="how the negatives are scored (nce; equal up to rounding): gathered rows, or the whole bank"
    )
    reweight: Literal["confidence", "none"] = option("confidence", help="sample weights p_T(y|x)^beta, or none")
    beta: float = option(1.0, ge=0, help="exponent of the confidence weights")
    adv_loss: Literal["contrast", "ce"] = option("contrast", help="the inner loss: the contrastive loss, or CE")
    beta_c: float = option(0.8, ge=0, help="weight of the contrastive term")
    alpha_kd: float = option(0.0, ge=0, help="weight of KL(p_T(x) || p_S(x')) (0 for cross-task transfer)")


@register_method("gacd", role="distillation", needs_teacher=True, same_label_space=False)
class GACD(Method[GACDOptions]):
    """Guided adversarial contrastive distillation: match teacher and student features contrastively.

    Besides its options (`GACDOptions`) it needs three facts about the run (`RunFacts`), which the
    command line fills in: `student_dim` (the student's `feature_dim`, required), `num_samples`
    (training-set size N, required by `nce` for the memory bank) and `same_label_space` (False for
    cross-task transfer: reweighting off, `alpha_kd` must be 0). `same_label_space=False` at
    registration says that gacd can transfer across label spaces.
    """

    def __init__(self, options: GACDOptions, **context: Any) -> None:
        super().__init__(options, **context)
        facts = self.facts
        self.attack = AttackSettings(options.attack, num_samples=facts.num_samples)
        if not facts.same_label_space:
            if options.alpha_kd > 0:
                raise ConfigError(
                    "option 'alpha_kd' must be 0 when teacher and student have different label spaces "
                    "(cross-task transfer matches features only)"
                )
            if options.reweight == "confidence":
                warnings.warn(
                    "gacd: teacher and student label spaces differ (cross-task), so confidence "
                    "reweighting is off (reweight=none)",
                    UserWarning,
                    stacklevel=2,
                )
                self.options = options = dataclasses.replace(options, reweight="none")
        if facts.student_dim is None:
            raise ConfigError(
                "gacd needs the student's feature_dim to build its projection head: pass "
                "student_dim=student.feature_dim (the distill command passes it)"
            )
        self.student_dim = facts.student_dim
        teacher_dim = getattr(self.teacher, "feature_dim", None)
        if isinstance(teacher_dim, bool) or not isinstance(teacher_dim, int) or teacher_dim < 1:
            raise ConfigError(
                f"gacd needs a teacher with an integer feature_dim (a robustdistill classifier); got {teacher_dim!r}"
            )
        self.teacher_dim = teacher_dim
        self.embed_s = EmbedHead(self.student_dim, options.feat_dim)
        self.embed_t = EmbedHead(self.teacher_dim, options.feat_dim)
        self.memory: MemoryBank | None = None
        if options.estimator == "nce":
            if facts.num_samples is None:
                raise ConfigError(
                    "estimator 'nce' needs 'num_samples' (the training-set size) for its memory bank; "
                    "pass num_samples=len(train) or use estimator=infonce"
                )
            if options.nce_k > facts.num_samples - 1:
                warnings.warn(
                    f"gacd: nce_k={options.nce_k} is more than the {facts.num_samples - 1} other training samples; "
                    "negatives are drawn with replacement and will repeat",
                    UserWarning,
                    stacklevel=2,
                )
            self.memory = MemoryBank(facts.num_samples, options.feat_dim, options.momentum)

    # -- pieces, public so that they can be checked one by one ---------------------------------
    def sample_weights(self, teacher_logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """`(w, raw)`: `raw_i = p_T(y_i|x_i)^beta` (0 where the probability is 0), `w = raw / mean(raw)`.

        Both detached, shape (B,). The mean runs over the global batch (all DDP ranks, whose shards
        have equal size). With `reweight=none` both are ones. If every raw weight of the batch is 0,
        the weights are all 0 (the contrastive term drops out for that batch).
        """
        if self.options.reweight == "none":
            ones = torch.ones(y.shape[0], device=y.device)
            return ones, ones
        with torch.no_grad():
            log_p = F.log_softmax(teacher_logits.detach().float(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
            raw = torch.where(log_p.exp() > 0, torch.exp(self.options.beta * log_p), torch.zeros_like(log_p))
            weights = raw / dist.mean_over_ranks(raw.mean()).clamp_min(torch.finfo(raw.dtype).tiny)
        return weights, raw

    def sample_negatives(self, index: Tensor) -> Tensor | None:
        """`(B, nce_k)` memory slots of other samples for `nce` (drawn with torch's global RNG); None for infonce."""
        if self.memory is None:
            return None
        return self.memory.sample_negatives(index, self.options.nce_k)

    def bank_negatives(self, negatives: Tensor | None) -> tuple[BankNegatives, BankNegatives] | None:
        """The negatives at the slots `negatives` (B, K) in `(student bank, teacher bank)` (`BankNegatives`).

        Taken once per batch and reused by every attack step and by the loss (the memory changes only
        after the loss); `nce_scoring` says how they are held and scored. None for infonce.
        """
        if self.memory is None or negatives is None:
            return None
        scoring = self.options.nce_scoring
        memory = self.memory
        return memory.negatives(negatives, "student", scoring), memory.negatives(negatives, "teacher", scoring)

    def contrastive_loss(
        self,
        z_t: Tensor,
        z_s: Tensor,
        negatives: Tensor | tuple[BankNegatives, BankNegatives] | None = None,
        *,
        teacher_scores: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Per-sample contrastive loss `l` (B,) of embeddings `z_t`, `z_s`, and the NCE `log Z` estimate.

        `nce`: `l_i = l_i(teacher anchor vs student bank) + l_i(student anchor vs teacher bank)`,
        negatives the bank slots `negatives` (B, K) (or the `BankNegatives` pair from
        `bank_negatives`), read without gradient; `log Z` is the stored
        constant where set, else estimated from this batch (the estimate is returned so the caller
        can store it once the loss is computed); `teacher_scores` are the anchor's scores against the
        student bank when already known (fixed anchor). `infonce`: teacher-anchored in-batch InfoNCE.
        """
        if self.memory is None:
            return infonce_loss(z_t, z_s, temperature=self.options.temperature), None
        if negatives is None:
            raise ConfigError("estimator 'nce' needs the negatives' memory slots (B, K)")
        bank = self.memory
        with torch.autocast(device_type=z_t.device.type, enabled=False):
            z_t, z_s = z_t.float(), z_s.float()
            held = negatives if isinstance(negatives, tuple) else self.bank_negatives(negatives)
            assert held is not None
            neg_student, neg_teacher = held
            positive = (z_t * z_s).sum(dim=1)
            scores_t = neg_student.scores(z_t) if teacher_scores is None else teacher_scores  # teacher anchor
            scores_s = neg_teacher.scores(z_s)  # student anchor vs teacher bank
        n, tau = bank.num_samples, self.options.temperature
        estimate = torch.stack(
            [
                estimate_log_z(positive, scores_t, temperature=tau, num_samples=n),
                estimate_log_z(positive, scores_s, temperature=tau, num_samples=n),
            ]
        )
        log_z = bank.resolved_log_z(estimate)
        loss = nce_loss_from_scores(positive, scores_t, temperature=tau, num_samples=n, log_z=log_z[0])
        loss = loss + nce_loss_from_scores(positive, scores_s, temperature=tau, num_samples=n, log_z=log_z[1])
        return loss, estimate

    def guided_examples(
        self,
        student: nn.Module,
        x: Tensor,
        y: Tensor,
        anchor: Tensor,
        negatives: Tensor | tuple[BankNegatives, BankNegatives] | None = None,
        index: Tensor | None = None,
    ) -> Tensor:
        """`x'`: PGD on the student maximising the per-sample contrastive loss against the fixed `anchor`.

        The negatives (nce) are the batch's fixed slots and the memory is not updated during the
        attack; the student's head is applied to `student.features(x')`. With `adv_loss=ce`, plain
        PGD on `CE(S(x'), y)`.
        """
        net = _unwrap(student)
        if self.options.adv_loss == "ce":
            return self.attack.perturb(net, x, y, index, loss="ce")
        anchor = anchor.detach()
        head = self.embed_s
        if isinstance(negatives, Tensor):
            negatives = self.bank_negatives(negatives)  # once for all the attack's steps
        teacher_scores = None
        if negatives is not None:  # fixed anchor and memory: its scores are the same at every step
            with torch.no_grad():
                teacher_scores = negatives[0].scores(anchor)

        def objective(features: Tensor, labels: Tensor) -> Tensor:
            return self.contrastive_loss(anchor, head(features), negatives, teacher_scores=teacher_scores)[0]

        return self.attack.perturb(net, x, y, index, loss=FeatureLoss(objective))

    # -- the objective -------------------------------------------------------------------------
    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            teacher_logits, teacher_features = logits_and_features(self.teacher, x)
        if teacher_features.shape[1] != self.teacher_dim:
            raise ConfigError(
                f"the teacher gave {teacher_features.shape[1]}-d features but gacd was built for {self.teacher_dim}"
            )
        z_t = self.embed_t(teacher_features.detach())
        negatives = self.bank_negatives(self.sample_negatives(index))  # one snapshot for attack and loss
        x_adv = self.guided_examples(student, x, y, z_t, negatives, index=index)
        logits_adv, features_adv = logits_and_features(student, x_adv)
        if features_adv.shape[1] != self.student_dim:
            raise ConfigError(
                f"the student gave {features_adv.shape[1]}-d features but gacd was built with "
                f"student_dim={self.student_dim}; pass student_dim=student.feature_dim"
            )
        uses_teacher_classes = self.options.reweight == "confidence" or self.options.alpha_kd > 0
        if uses_teacher_classes and teacher_logits.shape[1] != logits_adv.shape[1]:
            raise ConfigError(
                f"the teacher has {teacher_logits.shape[1]} classes and the student {logits_adv.shape[1]}: "
                "for cross-task transfer pass same_label_space=false (reweighting off, alpha_kd=0)"
            )
        z_s = self.embed_s(features_adv)
        per_sample, log_z_estimate = self.contrastive_loss(z_t, z_s, negatives)
        weights, raw = self.sample_weights(teacher_logits, y)
        contrast = (weights * per_sample).mean()
        ce = F.cross_entropy(logits_adv.float(), y)
        loss = ce + self.options.beta_c * contrast
        terms: dict[str, Tensor] = {}
        if self.options.alpha_kd > 0:
            kd = kl_div(teacher_logits, logits_adv).mean()
            loss = loss + self.options.alpha_kd * kd
            terms["kd"] = kd.detach()
        if self.memory is not None:
            assert log_z_estimate is not None
            # After the loss: the negatives hold copies of the bank, so the in-place update is autograd-safe.
            self.memory.update(index, z_t.detach(), z_s.detach())
            self.memory.set_log_z(log_z_estimate)
        else:
            terms["mi_bound"] = (math.log(x.shape[0]) - per_sample.mean()).detach()
        return {
            "loss": loss,
            "ce_adv": ce.detach(),
            "contrast": contrast.detach(),
            "weight_mean": raw.mean(),
            "acc_adv": accuracy(logits_adv, y),
            **terms,
        }

    def diagnostics(self) -> dict[str, float]:
        if self.memory is None:
            return {}
        log_z = self.memory.log_z.tolist()
        return {
            name: value
            for name, value in (("nce_log_z_t", log_z[0]), ("nce_log_z_s", log_z[1]))
            if not math.isnan(value)
        }
