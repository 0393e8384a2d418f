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

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill import models
from robustdistill.attacks import KLToSoftLabels, attack_mode
from robustdistill.errors import ConfigError
from robustdistill.methods.base import AttackSettings, Method, accuracy, check_positive, kl_batchmean
from robustdistill.methods.kd import check_temperature
from robustdistill.methods.registry import register_method

SPEC_FIELDS = ("arch", "num_classes", "in_channels", "kwargs", "mean", "std")


def build_peer(student_spec: Any, peer: str | None, peer_opts: dict[str, Any] | None) -> nn.Module:
    """The peer: architecture `peer` (default the student's) sized like the student, with its normalisation.

    `peer_opts` are the peer's model options; by default the student's when the architecture is the
    student's, none otherwise.
    """
    if not isinstance(student_spec, dict) or any(key not in student_spec for key in SPEC_FIELDS):
        raise ConfigError(
            "peeraid needs option 'student_spec' (the student's model spec, student.spec) to build its peer"
        )
    if peer_opts is not None and not isinstance(peer_opts, dict):
        raise ConfigError(f"option 'peer_opts' must be a mapping of model options, got {peer_opts!r}")
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


@register_method("peeraid")
class PeerAiD(Method):
    """Train a peer tutor on the student's adversarial examples and distil it into the student there."""

    def __init__(
        self,
        *,
        peer: str | None = None,
        peer_opts: dict[str, Any] | None = None,
        tau: float = 5.0,
        tau_peer: float = 1.0,
        gamma1: float = 1.0,
        gamma2: float = 0.1,
        lamb1: float = 0.0,
        lamb2: float = 1.0,
        lamb3: float = 1.0,
        class_mean_kl: bool = True,
        eps: float = 8 / 255,
        step_size: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        student_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.peer = build_peer(student_spec, peer, peer_opts)
        self.peer_name = peer
        self.peer_opts = peer_opts
        self.student_spec = student_spec
        self.tau = check_temperature("tau", tau)
        self.tau_peer = check_temperature("tau_peer", tau_peer)
        self.gamma1 = check_positive("gamma1", gamma1, allow_zero=True)
        self.gamma2 = check_positive("gamma2", gamma2, allow_zero=True)
        self.lamb1 = check_positive("lamb1", lamb1, allow_zero=True)
        self.lamb2 = check_positive("lamb2", lamb2, allow_zero=True)
        self.lamb3 = check_positive("lamb3", lamb3, allow_zero=True)
        if not isinstance(class_mean_kl, bool):
            raise ConfigError(f"option 'class_mean_kl' must be true or false, got {class_mean_kl!r}")
        self.class_mean_kl = class_mean_kl
        self.attack = AttackSettings(eps=eps, step_size=step_size, steps=steps, norm=norm)

    def compute(self, student: nn.Module, x: Tensor, y: Tensor, index: Tensor) -> dict[str, Tensor]:
        with attack_mode(self.peer), torch.no_grad():
            peer_clean = self.peer(x)
        soft_labels = F.softmax(peer_clean.float(), dim=1)
        x_adv = self.attack.perturb(student, x, y, index, loss=KLToSoftLabels(soft_labels), random_start="normal")
        peer_adv = self.peer(x_adv)
        logits_adv = student(x_adv)
        c = 1 / logits_adv.shape[1] if self.class_mean_kl else 1.0

        peer_ce = F.cross_entropy(peer_adv.float(), y)
        peer_kl = kl_batchmean(logits_adv.detach(), peer_adv, self.tau_peer)
        loss_peer = self.gamma1 * peer_ce + self.gamma2 * self.tau_peer**2 * c * peer_kl

        student_ce = F.cross_entropy(logits_adv.float(), y)
        student_kl = kl_batchmean(peer_adv.detach(), logits_adv, self.tau)
        loss_student = self.lamb1 * student_ce + self.lamb2 * self.tau**2 * c * student_kl
        terms: dict[str, Tensor] = {}
        if self.lamb3 > 0:
            logits_clean = student(x)
            consistency = kl_batchmean(logits_clean, logits_adv, self.tau)
            loss_student = loss_student + self.lamb3 * self.tau**2 * c * consistency
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

    def options(self) -> dict[str, Any]:
        return {
            "peer": self.peer_name,
            "peer_opts": self.peer_opts,
            "tau": self.tau,
            "tau_peer": self.tau_peer,
            "gamma1": self.gamma1,
            "gamma2": self.gamma2,
            "lamb1": self.lamb1,
            "lamb2": self.lamb2,
            "lamb3": self.lamb3,
            "class_mean_kl": self.class_mean_kl,
            "student_spec": self.student_spec,
            **self.attack.as_dict(),
        }
