"""Linear probe on frozen features: how linearly usable (and how robust) a representation is.

`linear_probe(model, train_data, test_data, epochs=200)` extracts `model.features(x)` once for
both sets (model in `eval()`, no gradient), standardises them with the training set's per-dimension
mean and standard deviation, and fits multinomial logistic regression
`min_W,b  mean_i CE(W f_i + b, y_i) + (weight_decay / 2) ||W||^2` by full-batch accelerated
gradient descent from zero (`fit_linear`): the problem is convex, so the result does not depend on
a seed, and `epochs` is the number of full-batch gradient steps. It reports probe accuracy on the
test set and, given an attack, the probe's robust accuracy, where the attack runs end to end
through `ProbeModel` = frozen backbone -> standardisation -> linear probe (so the adversary sees
the classifier that is evaluated).

This is the cross-task evaluation of GACD (a student distilled from a teacher of another task is
judged by what a linear classifier can read from its features).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.data import ArrayDataset, subset
from robustdistill.errors import ConfigError

__all__ = ["ProbeModel", "extract_features", "fit_linear", "linear_probe"]


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(model: nn.Module, data: ArrayDataset, *, batch_size: int = 256) -> Tensor:
    """`model.features(images / 255)` for every sample, `(N, D)` float32 on the model's device."""
    features = getattr(model, "features", None)
    if not callable(features):
        raise ConfigError(f"a linear probe needs a model with features(x); {type(model).__name__} has none")
    device = _device_of(model)
    was_training = model.training
    model.eval()
    try:
        chunks = [features(images.to(device).float() / 255).float() for images in data.images.split(batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def fit_linear(
    features: Tensor, labels: Tensor, num_classes: int, *, epochs: int = 200, weight_decay: float = 1e-4
) -> nn.Linear:
    """Multinomial logistic regression on fixed features by full-batch accelerated gradient descent.

    Minimises `mean_i CE(W f_i + b, y_i) + (weight_decay / 2) ||W||^2` from zero with Nesterov's
    method (FISTA momentum) and the fixed step `1 / L`, where
    `L = lambda_max([F 1]^T [F 1]) / (2 n) + weight_decay` bounds the curvature of the softmax
    cross-entropy. The problem is convex and the iteration deterministic: no seed, no line search,
    `epochs` full-batch gradient steps (each one pass over the features). Gradients are written out
    (`softmax - onehot`), so no autograd or `torch.optim` is involved.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}")
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    with torch.no_grad():
        x = features.detach().float()
        n, dim = x.shape
        x = torch.cat([x, torch.ones(n, 1, device=x.device)], dim=1)  # last column: the bias
        onehot = F.one_hot(labels.to(x.device).long(), num_classes).float()
        decay = torch.full((dim + 1, 1), float(weight_decay), device=x.device)
        decay[-1] = 0.0  # the bias is not penalised
        curvature = float(torch.linalg.eigvalsh((x.t() @ x).double())[-1]) / (2 * n) + float(weight_decay)
        step = 1.0 / max(curvature, 1e-12)
        weights = torch.zeros(dim + 1, num_classes, device=x.device)
        lookahead, t = weights.clone(), 1.0
        for _ in range(epochs):
            grad = x.t() @ (torch.softmax(x @ lookahead, dim=1) - onehot) / n + decay * lookahead
            updated = lookahead - step * grad
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            lookahead = updated + ((t - 1.0) / t_next) * (updated - weights)
            weights, t = updated, t_next
        linear = nn.Linear(dim, num_classes).to(x.device)
        linear.weight.copy_(weights[:-1].t())
        linear.bias.copy_(weights[-1])
    linear.requires_grad_(False)
    return linear


class ProbeModel(nn.Module):
    """`x -> linear((backbone.features(x) - mean) / std)`: the frozen backbone with its probe, one classifier."""

    feature_mean: Tensor  # buffers, registered in __init__
    feature_std: Tensor

    def __init__(self, backbone: nn.Module, linear: nn.Linear, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.linear = linear
        self.register_buffer("feature_mean", mean.detach().clone())
        self.register_buffer("feature_std", std.detach().clone())

    def features(self, x: Tensor) -> Tensor:
        backbone_features = cast(Callable[[Tensor], Tensor], self.backbone.features)  # __getattr__: Tensor | Module
        return (backbone_features(x).float() - self.feature_mean) / self.feature_std

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.features(x))


@torch.no_grad()
def _accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int) -> float:
    device = _device_of(model)
    correct = 0
    for xb, yb in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        correct += int((model(xb.to(device).float() / 255).argmax(dim=1) == yb.to(device)).sum())
    return correct / max(1, images.shape[0])


def linear_probe(
    model: nn.Module,
    train_data: ArrayDataset,
    test_data: ArrayDataset,
    *,
    epochs: int = 200,
    weight_decay: float = 1e-4,
    attack: str | Callable[[nn.Module], Callable[[Tensor, Tensor], Tensor]] | None = None,
    eps: float | None = None,
    norm: str = "linf",
    n_train: int | None = None,
    n_test: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a linear probe on `model`'s frozen features of `train_data`; report accuracy on `test_data`.

    Args:
        model: a classifier with `features(x)`; it is not modified (eval mode during the call, restored).
        train_data, test_data: `ArrayDataset`s of the same label space (the probe's task).
        epochs: full-batch gradient steps of the logistic regression (see `fit_linear`).
        weight_decay: L2 penalty on the probe weights.
        attack: None; an attack name of `robustdistill.attacks.create` ("pgd-20", "fgsm", ...) with
            `eps` (and `norm`); or a factory `attack(probe_model) -> callable(x, y) -> x_adv`. The
            attack runs through backbone + probe as one model.
        n_train, n_test: class-balanced subsets (seeded by `seed`); None uses every sample.
        batch_size: feature extraction and attack batch size.

    Returns:
        `{"accuracy", "train_accuracy", "robust_accuracy" (with an attack), "attack" (its name or
        repr), "eps", "epochs", "weight_decay", "n_train", "n_test", "feature_dim", "num_classes"}`.
    """
    if train_data.num_classes != test_data.num_classes:
        raise ConfigError(
            f"probe train and test sets have {train_data.num_classes} and {test_data.num_classes} classes; "
            "use two splits of the same dataset"
        )
    if isinstance(attack, str) and eps is None:
        raise ConfigError(f"attack '{attack}' needs eps")
    if n_train is not None:
        train_data = subset(train_data, n_train, seed=seed)
    if n_test is not None:
        test_data = subset(test_data, n_test, seed=seed)
    device = _device_of(model)
    train_features = extract_features(model, train_data, batch_size=batch_size)
    mean = train_features.mean(dim=0)
    std = train_features.std(dim=0, unbiased=False).clamp_min(1e-6)
    linear = fit_linear(
        (train_features - mean) / std,
        train_data.labels,
        train_data.num_classes,
        epochs=epochs,
        weight_decay=weight_decay,
    )
    probe = ProbeModel(model, linear, mean, std)
    was_training = model.training
    probe.eval()
    try:
        result: dict[str, Any] = {
            "accuracy": _accuracy(probe, test_data.images, test_data.labels, batch_size),
            "train_accuracy": float(
                (linear((train_features - mean) / std).argmax(dim=1) == train_data.labels.to(device)).float().mean()
            ),
            "epochs": epochs,
            "weight_decay": weight_decay,
            "n_train": len(train_data),
            "n_test": len(test_data),
            "feature_dim": int(train_features.shape[1]),
            "num_classes": train_data.num_classes,
        }
        if attack is not None:
            if isinstance(attack, str):
                from robustdistill.attacks import create

                assert eps is not None  # a named attack without eps was refused above
                attacker = create(attack, probe, eps, norm=norm)
            else:
                attacker = attack(probe)
            result["robust_accuracy"] = _robust_accuracy_of(probe, attacker, test_data, batch_size, device)
            result["attack"] = attack if isinstance(attack, str) else repr(attacker)
            result["eps"] = eps if eps is not None else getattr(attacker, "eps", None)
    finally:
        model.train(was_training)
    return result


def _robust_accuracy_of(
    probe: ProbeModel,
    attacker: Callable[[Tensor, Tensor], Tensor],
    data: ArrayDataset,
    batch_size: int,
    device: torch.device,
) -> float:
    """Accuracy of `probe` on `attacker(x, y)` over `data` (the attack sees backbone + probe)."""
    correct = 0
    for xb, yb in zip(data.images.split(batch_size), data.labels.split(batch_size), strict=True):
        x, y = xb.to(device).float() / 255, yb.to(device)
        x_adv = attacker(x, y)
        with torch.no_grad():
            correct += int((probe(x_adv).argmax(dim=1) == y).sum())
    return correct / max(1, len(data))
