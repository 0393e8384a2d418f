"""Attack spec strings ("fgsm", "pgd-20", "cw", "autoattack", "apgd-ce", ...) to attack objects."""

from __future__ import annotations

import difflib
import re
from typing import Any

from torch import Tensor, nn

from robustdistill.attacks.autoattack import AUTOATTACK_ATTACKS, AutoAttack
from robustdistill.attacks.cw import CW
from robustdistill.attacks.fgsm import FGSM
from robustdistill.attacks.pgd import PGD
from robustdistill.config import MAX_ATTACK_STEPS
from robustdistill.errors import ConfigError

__all__ = ["available", "create"]

#: evaluation defaults (METHODS.md): PGD-20 and CW-30, step eps/4, uniform random start
DEFAULT_PGD_STEPS = 20
DEFAULT_CW_STEPS = 30

_FAMILIES = ("fgsm", "pgd", "pgd-N", "cw", "cw-N", "autoattack", "autoattack-plus", *AUTOATTACK_ATTACKS)
_AUTOATTACK_ALIASES = {"autoattack": "standard", "aa": "standard", "autoattack-plus": "plus", "aa+": "plus"}
_NUMBERED = re.compile(r"^(pgd|cw)-?(\d+)$")
_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def available() -> list[str]:
    """Spec strings understood by `create`; N is a number of steps, AutoAttack names combine with '+'."""
    return sorted(_FAMILIES)


def _build(cls: type, fixed: dict[str, Any], options: dict[str, Any], name: str, model: nn.Module) -> Any:
    """`cls(model, **fixed, **options)`; an option the name fixes or the class does not take is a ConfigError."""
    for key in options:
        if key in fixed:
            raise ConfigError(f"option '{key}' is fixed by the attack name '{name}': change the name instead")
    try:
        return cls(model, **fixed, **options)
    except TypeError as error:  # the class's keyword-only arguments are its options
        unknown = _UNEXPECTED.search(str(error))
        if unknown is None:
            raise
        raise ConfigError(f"attack '{name}' has no option '{unknown.group(1)}' (see docs/attacks.md)") from None


def create(name: str, model: nn.Module, eps: float | Tensor, **options: Any) -> Any:
    """An attack object from a spec string, with `eps` and any further keyword options of its class.

    - "fgsm": `FGSM`.
    - "pgd" (= "pgd-20"), "pgd-N": `PGD` with N steps, step `eps/4`, uniform random start.
    - "cw" (= "cw-30"), "cw-N": `CW` (PGD on the CW margin), N steps, step `eps/4`.
    - "autoattack" / "aa": standard AutoAttack; "autoattack-plus": the "plus" version.
    - "apgd-ce", "apgd-t", "fab-t", "square", "apgd-dlr", "fab", or several joined by '+'
      ("apgd-ce+apgd-t"): a custom AutoAttack with those attacks.

    Example::

        >>> attack = create("pgd-20", model, 8 / 255, norm="linf", seed=0)
        >>> x_adv = attack(x, y)
    """
    if not isinstance(name, str):
        raise ConfigError(f"an attack name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    if key == "fgsm":
        return _build(FGSM, {"eps": eps}, options, name, model)
    numbered = _NUMBERED.match(key)
    if key in ("pgd", "cw") or numbered:
        family = numbered.group(1) if numbered else key
        default = DEFAULT_PGD_STEPS if family == "pgd" else DEFAULT_CW_STEPS
        steps = int(numbered.group(2)) if numbered else default
        if steps > MAX_ATTACK_STEPS:
            raise ConfigError(f"attack '{name}' asks for {steps} steps; at most {MAX_ATTACK_STEPS} are allowed")
        cls = PGD if family == "pgd" else CW
        return _build(cls, {"eps": eps, "steps": steps}, options, name, model)
    if key in _AUTOATTACK_ALIASES:
        return _build(AutoAttack, {"eps": eps, "version": _AUTOATTACK_ALIASES[key]}, options, name, model)
    parts = [p.strip() for p in key.split("+")]
    if all(p in AUTOATTACK_ATTACKS for p in parts):
        return _build(AutoAttack, {"eps": eps, "version": "custom", "attacks": parts}, options, name, model)
    choices = [*(f for f in _FAMILIES if not f.endswith("-N")), "pgd-20", "pgd-10", "cw-30", "aa"]
    close = difflib.get_close_matches(key, choices, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown attack '{name}'.{hint} Available: {', '.join(available())}")
