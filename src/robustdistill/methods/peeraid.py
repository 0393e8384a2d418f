"""PeerAiD (Jung, Jang, Song & Lee, "PeerAiD: Improving Adversarial Distillation from a Specialized Peer
Tutor", CVPR 2024), as in the official `main.py` (`train_kd`) and `attack_function.py` (`LinfPeerAttack`)
of github jaewonalive/PeerAiD: no pretrained teacher; a peer network `P` is trained jointly with the
student on the student's adversarial examples.

    x'     = PGD on KL(p_P(x) || p_S(x')) from x + 0.001·N(0, 1)    (the student is attacked; the peer's
                                                                     clean soft labels, peer in eval())
    L_peer = gamma1 · CE(P(x'), y) + gamma2 · tau_p² · c · KL(p_S(x'; tau_p) || p_P(x'; tau_p))
    L_S    = lamb1 · CE(S(x'), y) + lamb2 · tau² · c · KL(p_P(x'; tau) || p_S(x'; tau))
             + lamb3 · tau² · c · KL(p_S(x; tau) || p_S(x'; tau))
    L      = L_peer + L_S          (one backward; S(x') is detached in L_peer, P(x') in L_S)
    c      = 1 / C (`class_mean_kl`, the official nn.KLDivLoss() mean over batch and classes) or 1
    defaults (official CIFAR-10 script): tau 5, tau_p 1, gamma1 1, gamma2 0.1, lamb1 0, lamb2 1, lamb3 1

The peer is a sub-module of the method: its weights and batch-norm statistics are in the method's
state (the checkpoint), its parameters are trained by the run's optimiser (their momentum buffers in
its state). It is built from the student's model spec (`student_spec`) with the student's
architecture unless `peer` names another. Gradient flows through both student outputs of the last term.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill import models
from robustdistill.attacks import KLToSoftLabels, attack_mode, kl_div
from robustdistill.errors import ConfigError
from robustdistill.methods.attack import AttackOptions, AttackSettings
from robustdistill.methods.base import Method, accuracy
from robustdistill.methods.options import Options, option
from robustdistill.methods.registry import register_method

SPEC_FIELDS = ("arch", "num_classes", "in_channels", "kwargs", "mean", "std")


def build_peer(student_spec: Any, peer: str | None, peer_opts: Mapping[str, Any] | None) -> nn.Module:
    """The peer: architecture `peer` (default the student's) sized like the student, with its normalisation.

    `peer_opts` are the peer's model options; by default the student's when the architecture is the
    student's, none otherwise.
    """
    if not isinstance(student_spec, dict) or any(key not in student_spec for key in SPEC_FIELDS):
        raise ConfigError(
            "peeraid needs the student's model spec to build its peer: pass student_spec=student.spec "
            "(the distill and train-teacher commands pass it)"
        )
    arch = peer or student_spec["arch"]
    options = peer_opts if peer_opts is not None else (student_spec["kwargs"] if peer is None else {})
    return models.create(
        arch,
        num_classes=student_spec["num_classes"],
        in_channels=student_spec["in_channels"],
        mean=student_spec["mean"],
        std=student_spec["std"],
        **options,
    )


@dataclass(frozen=True)
class PeerAiDOptions(Options):
    attack: AttackOptions = field(default_factory=AttackOptions)
    peer: str | None = option(None, help="the peer's architecture; none: the student's")
    peer_opts: Mapping[str, Any] | None = option(None, help="the peer's model options; none: the student's (same arch)")
    tau: float = option(5.0, gt=0, help="temperature of the student's distillation terms")
    tau_peer: float = option(1.0, gt=0, help="temperature of the peer's distillation term")
    gamma1: float = option(1.0, ge=0, help="weight of the peer's cross-entropy on x'")
    gamma2: float = option(0.1, ge=0, help="weight of the peer's KL to the student")
    lamb1: float = option(0.0, ge=0, help="weight of the student's cross-entropy on x'")
    lamb2: float = option(1.0, ge=0, help="weight of the student's KL to the peer")
    lamb3: float = option(1.0, ge=0, help="weight of the student's clean-adversarial consistency")
    class_mean_kl: bool = option(True, help="divide the KL terms by the number of classes (nn.KLDivLoss's mean)")


@register_method("peeraid", role="distillation")
class PeerAiD(Method[PeerAiDOptions]):
    """Train a peer tutor on the student's adversarial examples and distil it into the student there."""

    def __init__(self, options: PeerAiDOptions, **context: Any) -> None:
        super().__init__(options, **context)
        self.peer = build_peer(self.facts.student_spec, options.peer, options.peer_opts)
        self.attack = AttackSettings(options.attack, num_samples=self.facts.num_samples)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        with attack_mode(self.peer), torch.no_grad():
            peer_clean = self.peer(x)
        soft_labels = F.softmax(peer_clean.float(), dim=1)
        x_adv = self.attack.perturb(student, x, y, index, loss=KLToSoftLabels(soft_labels), random_start="normal")
        peer_adv = self.peer(x_adv)
        logits_adv = student(x_adv)
        o = self.options
        c = 1 / logits_adv.shape[1] if o.class_mean_kl else 1.0

        peer_ce = F.cross_entropy(peer_adv.float(), y)
        peer_kl = kl_div(logits_adv.detach(), peer_adv, o.tau_peer).mean()
        loss_peer = o.gamma1 * peer_ce + o.gamma2 * o.tau_peer**2 * c * peer_kl

        student_ce = F.cross_entropy(logits_adv.float(), y)
        student_kl = kl_div(peer_adv.detach(), logits_adv, o.tau).mean()
        loss_student = o.lamb1 * student_ce + o.lamb2 * o.tau**2 * c * student_kl
        terms: dict[str, Tensor] = {}
        if o.lamb3 > 0:
            logits_clean = student(x)
            consistency = kl_div(logits_clean, logits_adv, o.tau).mean()
            loss_student = loss_student + o.lamb3 * o.tau**2 * c * consistency
            terms.update(kl_consistency=consistency.detach(), acc_clean=accuracy(logits_clean, y))
        return {
            "loss": loss_peer + loss_student,
            "loss_peer": loss_peer.detach(),
            "loss_student": loss_student.detach(),
            "ce_peer": peer_ce.detach(),
            "kl_peer": peer_kl.detach(),
            "kl_student": student_kl.detach(),
            "acc_peer_adv": accuracy(peer_adv, y),
            "acc_adv": accuracy(logits_adv, y),
            **terms,
        }
