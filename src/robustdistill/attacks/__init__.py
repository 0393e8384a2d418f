"""Attacks: threat models, the PGD engine with pluggable inner losses, FGSM, CW-inf and AutoAttack.

Every attack is an object in the style of torchattacks: keyword-only validated settings at
construction, `attack(x, y) -> x_adv`. Inputs are in [0, 1]; the attacked model is put in `eval()`
with frozen parameters for the attack and restored afterwards. See `docs/attacks.md`.

    >>> import robustdistill as rd
    >>> x_adv = rd.attacks.PGD(model, eps=8 / 255, step_size=2 / 255, steps=10)(x, y)
    >>> path = rd.attacks.PGD(model, eps=8 / 255, record_path=True)(x, y)        # (K, B, ...)
    >>> kl = rd.attacks.kl_div(teacher(x), model(x))                             # (B,), the one KL
    >>> attack = rd.attacks.create("pgd-20", model, 8 / 255)
"""

from robustdistill.attacks.autoattack import AUTOATTACK_ATTACKS, AutoAttack
from robustdistill.attacks.cw import CW
from robustdistill.attacks.factory import available, create
from robustdistill.attacks.fgsm import FGSM
from robustdistill.attacks.losses import (
    CrossEntropy,
    CWMargin,
    FeatureLoss,
    FunctionLoss,
    InnerLoss,
    KLToClean,
    KLToModel,
    KLToSoftLabels,
    LogitsLoss,
    available_losses,
    kl_div,
    resolve_loss,
)
from robustdistill.attacks.pgd import NORMAL_START_STD, PGD, attack_mode, initial_point
from robustdistill.attacks.randomness import shared_random_starts
from robustdistill.attacks.reuse import PerturbationBank
from robustdistill.attacks.threat import (
    L2Threat,
    LinfThreat,
    ThreatModel,
    distance,
    get_threat,
    project,
    random_start,
    step,
)

__all__ = [
    "AUTOATTACK_ATTACKS",
    "CW",
    "FGSM",
    "NORMAL_START_STD",
    "PGD",
    "AutoAttack",
    "CWMargin",
    "CrossEntropy",
    "FeatureLoss",
    "FunctionLoss",
    "InnerLoss",
    "KLToClean",
    "KLToModel",
    "KLToSoftLabels",
    "L2Threat",
    "LinfThreat",
    "LogitsLoss",
    "PerturbationBank",
    "ThreatModel",
    "attack_mode",
    "available",
    "available_losses",
    "create",
    "distance",
    "get_threat",
    "initial_point",
    "kl_div",
    "project",
    "random_start",
    "resolve_loss",
    "shared_random_starts",
    "step",
]
