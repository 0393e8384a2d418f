"""The attack suite: clean, FGSM, PGD-k, CW-inf and AutoAttack accuracy, plus the per-sample worst case."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill import attacks as attack_lib
from robustdistill.data import ArrayDataset, Loader, subset
from robustdistill.errors import ConfigError
from robustdistill.evaluate.record import environment
from robustdistill.utils import resolve_device


def parse_attacks(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """`"clean,pgd-20"` or a list -> validated attack names (unknown names fail with the list)."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise ConfigError("no attacks given; choose from clean, " + ", ".join(attack_lib.available()))
    probe = nn.Flatten()
    for name in names:
        if name != "clean":
            attack_lib.create(name, probe, 0.1)  # raises a one-line ConfigError for unknown names
    return names


def describe(attack: object) -> dict[str, Any]:
    """The settings of an attack object that a result record should name."""
    keys = ("eps", "step_size", "steps", "norm", "random_start", "restarts", "version", "attacks", "seed")
    settings: dict[str, Any] = {"attack": type(attack).__name__}
    for key in keys:
        value = getattr(attack, key, None)
        if isinstance(value, (int, float, str, bool, list, tuple)) or value is None:
            settings[key] = list(value) if isinstance(value, tuple) else value
        else:
            settings[key] = str(value)
    loss = getattr(attack, "loss", None)
    if loss is not None:
        settings["loss"] = type(loss).__name__
    return settings


def attack_title(name: str) -> str:
    """How progress lines name an attack: "PGD-20", "FGSM", "AutoAttack", "APGD-CE + APGD-T (AutoAttack substitute)"."""
    key = name.lower()
    if key == "clean":
        return "clean"
    if key in ("autoattack", "aa"):
        return "AutoAttack (standard)"
    if key in ("autoattack-plus", "aa+"):
        return "AutoAttack (plus)"
    parts = key.split("+")
    if all(p in attack_lib.AUTOATTACK_ATTACKS for p in parts):
        return " + ".join(p.upper() for p in parts) + " (AutoAttack substitute)"
    if key == "pgd":
        return "PGD-20"
    if key == "cw":
        return "CW-30"
    return key.upper()


class _SubAttackBars:
    """One progress bar per attack of the reference AutoAttack, fed by its `progress` callback."""

    def __init__(self, enabled: bool, prefix: str) -> None:
        self.enabled, self.prefix = enabled, prefix
        self.batch = ""
        self._name: str | None = None
        self._bar: Any = None

    def __call__(self, attack: str, done: int, total: int) -> None:
        from robustdistill.runtime.progress import Progress

        if attack != self._name:
            self.close()
            self._name = attack
            self._bar = Progress(
                enabled=self.enabled,
                total=total,
                description=f"{self.prefix} {attack}{self.batch}",
                unit="forward passes",
            )
            self._bar.__enter__()
        self._bar.update(done)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
        self._bar, self._name = None, None


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return model(x).argmax(dim=1) == y


def attack_suite(
    model: nn.Module,
    data: ArrayDataset,
    *,
    attacks: list[str] | tuple[str, ...] | str = ("clean", "pgd-20"),
    eps: float,
    norm: str = "linf",
    n: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    label: str = "model",
) -> dict[str, Any]:
    """Accuracy of `model` under each attack on (a fixed class-balanced subset of) `data`.

    Returns a record: `accuracy` (per attack, plus `worst_case`: a sample counts only if it
    survives every attack run, clean included; `worst_case_over` names them), the attack settings
    (each with its `n_examples`), eps, the number of examples, dataset, split, seed and software versions.
    With `progress`, a line per attack ("`label`: PGD-20 on 500 images") and a bar with a time
    estimate on stderr; AutoAttack gets a bar per attack of the reference implementation.
    """
    names = parse_attacks(attacks)
    if eps <= 0:
        raise ConfigError(f"eps must be > 0, got {eps}")
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    evaluated = subset(data, n, seed=seed) if n is not None and n < len(data) else data
    was_training = model.training
    model.eval().to(device)
    loader = Loader(evaluated, batch_size, shuffle=False, seed=seed, augment=None, device=str(device))
    correct: dict[str, list[Tensor]] = {name: [] for name in names}
    settings: dict[str, Any] = {}
    seconds: dict[str, float] = {name: 0.0 for name in names}
    torch.manual_seed(seed)
    bars = {name: _SubAttackBars(progress, label) for name in names}
    # FGSM is deterministic and takes no seed; every other attack is seeded for repeatable records.
    built = {}
    for name in names:
        if name == "clean":
            continue
        options: dict[str, Any] = {} if name == "fgsm" else {"seed": seed}
        attack = attack_lib.create(name, model, eps=eps, norm=norm, **options)
        if isinstance(attack, attack_lib.AutoAttack):
            attack.progress = bars[name]
        built[name] = attack
    for name, attack in built.items():
        settings[name] = {**describe(attack), "n_examples": len(evaluated)}
    settings["clean"] = {"n_examples": len(evaluated)}
    from robustdistill.runtime.progress import Progress, console

    batches = len(loader)
    # One attack at a time over every batch (each attack has its own seeded generator, so the order
    # of the loops does not change the result), so that each gets its own line and time estimate.
    for name in names:
        if progress:
            console.print(f"{label}: {attack_title(name)} on {len(evaluated)} images", highlight=False)
        is_autoattack = isinstance(built.get(name), attack_lib.AutoAttack)
        with Progress(enabled=progress and not is_autoattack, total=batches, description=f"{label} {name}") as bar:
            start = time.perf_counter()
            seen = 0
            for index, (x, y, _) in enumerate(loader.iterate()):
                bars[name].batch = f" batch {index + 1}/{batches}" if batches > 1 else ""
                x_eval = x if name == "clean" else built[name](x, y)
                correct[name].append(_correct(model, x_eval, y).cpu())
                seen += x.shape[0]
                bar.update(index + 1, rate=seen / max(time.perf_counter() - start, 1e-9))
            seconds[name] = time.perf_counter() - start
        bars[name].close()
    model.train(was_training)
    per_sample = {name: torch.cat(values) for name, values in correct.items()}
    worst = torch.stack(list(per_sample.values())).all(dim=0)
    accuracy = {name: float(v.float().mean()) for name, v in per_sample.items()}
    accuracy["worst_case"] = float(worst.float().mean())
    return {
        "accuracy": accuracy,
        "worst_case_over": list(names),
        "n_examples": len(evaluated),
        "eps": eps,
        "norm": norm,
        "attacks": settings,
        "seconds": seconds,
        "dataset": data.name,
        "split": data.split,
        "seed": seed,
        "per_sample_worst_case": worst.to(torch.uint8).tolist(),
        "environment": environment(),
    }
