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

DEFAULT_ATTACKS = ("clean", "fgsm", "pgd-20", "cw", "autoattack")


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
    settings = {"attack": type(attack).__name__}
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


@torch.no_grad()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return model(x).argmax(dim=1) == y


def run(
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
) -> dict[str, Any]:
    """Accuracy of `model` under each attack on (a fixed class-balanced subset of) `data`.

    Returns a record: `accuracy` (per attack, plus `worst_case`: a sample counts only if it
    survives every attack run, clean included), the attack settings, eps, the number of
    examples, dataset, split, seed and software versions.
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
    # FGSM is deterministic and takes no seed; every other attack is seeded for repeatable records.
    built = {
        name: attack_lib.create(name, model, eps=eps, norm=norm, **({} if name == "fgsm" else {"seed": seed}))
        for name in names
        if name != "clean"
    }
    for name, attack in built.items():
        settings[name] = describe(attack)
    settings["clean"] = {}
    from robustdistill.train.progress import Progress

    with Progress(enabled=progress, total=len(loader) * len(names), description="evaluate") as bar:
        done = 0
        for x, y, _ in loader.iterate():
            for name in names:
                start = time.perf_counter()
                x_eval = x if name == "clean" else built[name](x, y)
                correct[name].append(_correct(model, x_eval, y).cpu())
                seconds[name] += time.perf_counter() - start
                done += 1
                bar.update(done)
    model.train(was_training)
    per_sample = {name: torch.cat(values) for name, values in correct.items()}
    worst = torch.stack(list(per_sample.values())).all(dim=0)
    accuracy = {name: float(v.float().mean()) for name, v in per_sample.items()}
    accuracy["worst_case"] = float(worst.float().mean())
    return {
        "accuracy": accuracy,
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
