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

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.attacks import FeatureLoss
from robustdistill.errors import ConfigError
from robustdistill.methods.base import AttackSettings, Method, accuracy, check_choice, check_positive, kl_batchmean
from robustdistill.methods.contrast import (
    EmbedHead,
    MemoryBank,
    estimate_log_z,
    infonce_loss,
    nce_loss_from_scores,
)
from robustdistill.methods.registry import register_method
from robustdistill.runtime import distributed as dist

ESTIMATORS = ("nce", "infonce")
REWEIGHTS = ("confidence", "none")
ADV_LOSSES = ("contrast", "ce")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"option '{name}' must be an integer >= {minimum}, got {value!r}")
    return value


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


@register_method("gacd")
class GACD(Method):
    """Guided adversarial contrastive distillation: match teacher and student features contrastively.

    Options (METHODS.md, Method B; defaults in brackets): `estimator` [nce] | infonce, `feat_dim`
    [128], `nce_k` [4096], `temperature` [0.07], `momentum` [0.5], `reweight` [confidence] | none,
    `beta` [1], `adv_loss` [contrast] | ce, `beta_c` [0.8], `alpha_kd` [0], the attack's `eps`
    [8/255], `step_size` [eps/4], `steps` [10], `norm` [linf], and three facts about the run that
    the command line fills in: `student_dim` (the student's `feature_dim`, required),
    `num_samples` (training-set size N, required by `nce` for the memory bank) and
    `same_label_space` (False for cross-task transfer: reweighting off, `alpha_kd` must be 0).
    """

    needs_teacher = True
    #: features only: teacher and student may have different label spaces (cross-task transfer)
    same_label_space = False

    def __init__(
        self,
        *,
        teacher: nn.Module | None = None,
        estimator: str = "nce",
        feat_dim: int = 128,
        nce_k: int = 4096,
        temperature: float = 0.07,
        momentum: float = 0.5,
        reweight: str = "confidence",
        beta: float = 1.0,
        adv_loss: str = "contrast",
        beta_c: float = 0.8,
        alpha_kd: float = 0.0,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        reuse_steps: int = 0,
        num_samples: int | None = None,
        student_dim: int | None = None,
        same_label_space: bool = True,
    ) -> None:
        super().__init__(teacher=teacher)
        self.estimator = check_choice("estimator", estimator, ESTIMATORS)
        self.feat_dim = _check_int("feat_dim", feat_dim, 1)
        self.nce_k = _check_int("nce_k", nce_k, 1)
        self.temperature = check_positive("temperature", temperature)
        self.momentum = float(momentum)
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"option 'momentum' must be in [0, 1), got {momentum}")
        self.reweight = check_choice("reweight", reweight, REWEIGHTS)
        self.beta = check_positive("beta", beta, allow_zero=True)
        self.adv_loss = check_choice("adv_loss", adv_loss, ADV_LOSSES)
        self.beta_c = check_positive("beta_c", beta_c, allow_zero=True)
        self.alpha_kd = check_positive("alpha_kd", alpha_kd, allow_zero=True)
        self.attack = AttackSettings(
            eps=eps, step_size=step_size, steps=steps, norm=norm, reuse_steps=reuse_steps, num_samples=num_samples
        )
        if not isinstance(same_label_space, bool):
            raise ConfigError(f"option 'same_label_space' must be true or false, got {same_label_space!r}")
        self.shared_labels = same_label_space
        if not same_label_space:
            if self.alpha_kd > 0:
                raise ConfigError(
                    "option 'alpha_kd' must be 0 when teacher and student have different label spaces "
                    "(cross-task transfer matches features only)"
                )
            if self.reweight == "confidence":
                warnings.warn(
                    "gacd: teacher and student label spaces differ (cross-task), so confidence "
                    "reweighting is off (reweight=none)",
                    UserWarning,
                    stacklevel=2,
                )
                self.reweight = "none"
        if student_dim is None:
            raise ConfigError(
                "gacd needs option 'student_dim' (the student's feature_dim) to build its projection head; "
                "pass student_dim=student.feature_dim"
            )
        self.student_dim = _check_int("student_dim", student_dim, 1)
        teacher_dim = getattr(self.teacher, "feature_dim", None)
        if isinstance(teacher_dim, bool) or not isinstance(teacher_dim, int) or teacher_dim < 1:
            raise ConfigError(
                f"gacd needs a teacher with an integer feature_dim (a robustdistill classifier); got {teacher_dim!r}"
            )
        self.teacher_dim = teacher_dim
        self.embed_s = EmbedHead(self.student_dim, self.feat_dim)
        self.embed_t = EmbedHead(self.teacher_dim, self.feat_dim)
        self.num_samples = num_samples
        self.memory: MemoryBank | None = None
        if self.estimator == "nce":
            if num_samples is None:
                raise ConfigError(
                    "estimator 'nce' needs option 'num_samples' (the training-set size) for its memory bank; "
                    "pass it or use estimator=infonce"
                )
            self.num_samples = _check_int("num_samples", num_samples, 2)
            if self.nce_k > self.num_samples - 1:
                warnings.warn(
                    f"gacd: nce_k={self.nce_k} is more than the {self.num_samples - 1} other training samples; "
                    "negatives are drawn with replacement and will repeat",
                    UserWarning,
                    stacklevel=2,
                )
            self.memory = MemoryBank(self.num_samples, self.feat_dim, self.momentum)

    # -- pieces, public so that they can be checked one by one ---------------------------------
    def sample_weights(self, teacher_logits: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """`(w, raw)`: `raw_i = p_T(y_i|x_i)^beta` (0 where the probability is 0), `w = raw / mean(raw)`.

        Both detached, shape (B,). The mean runs over the global batch (all DDP ranks, whose shards
        have equal size). With `reweight=none` both are ones. If every raw weight of the batch is 0,
        the weights are all 0 (the contrastive term drops out for that batch).
        """
        if self.reweight == "none":
            ones = torch.ones(y.shape[0], device=y.device)
            return ones, ones
        with torch.no_grad():
            log_p = F.log_softmax(teacher_logits.detach().float(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
            raw = torch.where(log_p.exp() > 0, torch.exp(self.beta * log_p), torch.zeros_like(log_p))
            weights = raw / dist.mean_over_ranks(raw.mean()).clamp_min(torch.finfo(raw.dtype).tiny)
        return weights, raw

    def sample_negatives(self, index: Tensor) -> Tensor | None:
        """`(B, nce_k)` memory slots of other samples for `nce` (drawn with torch's global RNG); None for infonce."""
        if self.memory is None:
            return None
        return self.memory.sample_negatives(index, self.nce_k)

    def gather_negatives(self, negatives: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """The memory rows of the slots `negatives` (B, K): `(student bank, teacher bank)`, each (B, K, d).

        Gathered once per batch and reused by every attack step and by the loss (the memory changes
        only after the loss), instead of one (B, K, d) gather per bank per call. None for infonce.
        """
        if self.memory is None or negatives is None:
            return None
        bank = self.memory
        flat = negatives.reshape(-1)
        shape = (*negatives.shape, bank.dim)
        return bank.student.index_select(0, flat).view(shape), bank.teacher.index_select(0, flat).view(shape)

    def contrastive_loss(
        self,
        z_t: Tensor,
        z_s: Tensor,
        negatives: Tensor | tuple[Tensor, Tensor] | None = None,
        *,
        teacher_scores: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Per-sample contrastive loss `l` (B,) of embeddings `z_t`, `z_s`, and the NCE `log Z` estimate.

        `nce`: `l_i = l_i(teacher anchor vs student bank) + l_i(student anchor vs teacher bank)`,
        negatives the bank slots `negatives` (B, K) (or their rows from `gather_negatives`), read
        without gradient; `log Z` is the stored
        constant where set, else estimated from this batch (the estimate is returned so the caller
        can store it once the loss is computed); `teacher_scores` are the anchor's scores against the
        student bank when already known (fixed anchor). `infonce`: teacher-anchored in-batch InfoNCE.
        """
        if self.memory is None:
            return infonce_loss(z_t, z_s, temperature=self.temperature), None
        if negatives is None:
            raise ConfigError("estimator 'nce' needs the negatives' memory slots (B, K)")
        bank = self.memory
        with torch.autocast(device_type=z_t.device.type, enabled=False):
            z_t, z_s = z_t.float(), z_s.float()
            gathered = negatives if isinstance(negatives, tuple) else self.gather_negatives(negatives)
            assert gathered is not None
            neg_student, neg_teacher = gathered
            positive = (z_t * z_s).sum(dim=1)
            if teacher_scores is None:
                teacher_scores = torch.einsum("bkd,bd->bk", neg_student, z_t)  # teacher anchor vs student bank
            scores_t = teacher_scores
            scores_s = torch.einsum("bkd,bd->bk", neg_teacher, z_s)  # student anchor vs teacher bank
        n, tau = bank.num_samples, self.temperature
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
        negatives: Tensor | tuple[Tensor, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> Tensor:
        """`x'`: PGD on the student maximising the per-sample contrastive loss against the fixed `anchor`.

        The negatives (nce) are the batch's fixed slots and the memory is not updated during the
        attack; the student's head is applied to `student.features(x')`. With `adv_loss=ce`, plain
        PGD on `CE(S(x'), y)`.
        """
        net = _unwrap(student)
        if self.adv_loss == "ce":
            return self.attack.perturb(net, x, y, index, loss="ce")
        anchor = anchor.detach()
        head = self.embed_s
        if isinstance(negatives, Tensor):
            negatives = self.gather_negatives(negatives)  # once for all the attack's steps
        teacher_scores = None
        if negatives is not None:  # fixed anchor and memory: its scores are the same at every step
            with torch.no_grad(), torch.autocast(device_type=anchor.device.type, enabled=False):
                teacher_scores = torch.einsum("bkd,bd->bk", negatives[0], anchor.float())

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
        negatives = self.gather_negatives(self.sample_negatives(index))  # one gather for attack and loss
        x_adv = self.guided_examples(student, x, y, z_t, negatives, index=index)
        logits_adv, features_adv = logits_and_features(student, x_adv)
        if features_adv.shape[1] != self.student_dim:
            raise ConfigError(
                f"the student gave {features_adv.shape[1]}-d features but gacd was built with "
                f"student_dim={self.student_dim}; pass student_dim=student.feature_dim"
            )
        uses_teacher_classes = self.reweight == "confidence" or self.alpha_kd > 0
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
        loss = ce + self.beta_c * contrast
        terms: dict[str, Tensor] = {}
        if self.alpha_kd > 0:
            kd = kl_batchmean(teacher_logits, logits_adv)
            loss = loss + self.alpha_kd * kd
            terms["kd"] = kd.detach()
        if self.memory is not None:
            assert log_z_estimate is not None
            # After the loss: the gathered negatives are copies, so the in-place update is autograd-safe.
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

    def options(self) -> dict[str, Any]:
        return {
            "estimator": self.estimator,
            "feat_dim": self.feat_dim,
            "nce_k": self.nce_k,
            "temperature": self.temperature,
            "momentum": self.momentum,
            "reweight": self.reweight,
            "beta": self.beta,
            "adv_loss": self.adv_loss,
            "beta_c": self.beta_c,
            "alpha_kd": self.alpha_kd,
            "num_samples": self.num_samples,
            "student_dim": self.student_dim,
            "same_label_space": self.shared_labels,
            **self.attack.as_dict(),
        }
