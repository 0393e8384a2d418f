"""The `Classifier` base class every architecture in `robustdistill.models` derives from.

Inputs are images in `[0, 1]`; the model normalises them itself with its `mean` / `std` buffers,
so attacks and data loaders never have to know the dataset statistics.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.errors import ConfigError


class Classifier(nn.Module, ABC):
    """An image classifier split into `features` (pooled penultimate activations) and `head`.

    Subclasses call `super().__init__(num_classes, in_channels)`, set `feature_dim`, build a
    final linear layer reachable as `self.fc`, and implement `embed(z)`: normalised images to
    `(B, feature_dim)` features.
    """

    feature_dim: int
    fc: nn.Linear
    #: Per-channel input statistics, buffers of shape `(1, in_channels, 1, 1)` (registered in `__init__`).
    mean: Tensor
    std: Tensor
    #: True when the original code normalises with fixed constants of its own (the DeepMind models):
    #: a foreign checkpoint without `mean` / `std` then keeps the model's statistics, not the identity.
    own_statistics: bool = False

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        for label, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{label} must be a positive integer, got {value!r}.")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))
        # Filled in by `models.create`; `spec` needs them to rebuild the model.
        self.arch: str | None = None
        self.arch_kwargs: dict[str, Any] = {}

    # -- normalisation ---------------------------------------------------------------------------
    def set_normalization(self, mean: Sequence[float] | Tensor | None, std: Sequence[float] | Tensor | None) -> None:
        """Set the per-channel statistics (None keeps the identity 0 / 1)."""
        values = {}
        for label, given, default in (("mean", mean, 0.0), ("std", std, 1.0)):
            if given is None:
                values[label] = [default] * self.in_channels
                continue
            flat = torch.as_tensor(given, dtype=torch.float32, device="cpu").flatten().tolist()
            if len(flat) == 1 and self.in_channels > 1:
                flat = flat * self.in_channels
            if len(flat) != self.in_channels:
                raise ConfigError(
                    f"{label} has {len(flat)} values but the model has {self.in_channels} input channels; "
                    f"give one value per channel."
                )
            if not all(math.isfinite(v) for v in flat):
                raise ConfigError(f"{label} must be finite, got {flat}.")
            values[label] = flat
        if any(v <= 0 for v in values["std"]):
            raise ConfigError(f"std must be positive, got {values['std']}.")
        with torch.no_grad():
            self.mean.copy_(torch.tensor(values["mean"], device="cpu").view_as(self.mean))
            self.std.copy_(torch.tensor(values["std"], device="cpu").view_as(self.std))

    def normalize(self, x: Tensor) -> Tensor:
        """`(x - mean) / std` with the model's buffers."""
        return (x - self.mean) / self.std

    # -- the contract ----------------------------------------------------------------------------
    @abstractmethod
    def embed(self, z: Tensor) -> Tensor:
        """Normalised images `(B, C, H, W)` to pooled penultimate features `(B, feature_dim)`."""

    def features(self, x: Tensor) -> Tensor:
        """Images in `[0, 1]` to penultimate globally pooled features `(B, feature_dim)`."""
        return self.embed(self.normalize(x))

    def head(self, features: Tensor) -> Tensor:
        """Features `(B, feature_dim)` to logits `(B, num_classes)` (the final linear layer)."""
        return self.fc(features)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """`(logits, features)` in one pass."""
        feats = self.features(x)
        return self.head(feats), feats

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    # -- description -----------------------------------------------------------------------------
    def head_key(self) -> str:
        """The state-dict prefix of the final linear layer (for example `fc`)."""
        for name, module in self.named_modules():
            if module is self.fc:
                return name
        raise AttributeError("the final linear layer is not part of the module tree")

    @property
    def spec(self) -> dict[str, Any]:
        """JSON-serialisable description that `models.create(**...)` turns back into this model."""
        if self.arch is None:
            raise ConfigError(
                f"this {type(self).__name__} was built directly, so its spec is unknown; "
                f"build it with robustdistill.models.create(name, ...) to save it."
            )
        return {
            "arch": self.arch,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "kwargs": copy.deepcopy(self.arch_kwargs),
            "mean": self.mean.detach().flatten().cpu().tolist(),
            "std": self.std.detach().flatten().cpu().tolist(),
        }

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}, feature_dim={self.feature_dim}"


def scaled(channels: int, width: float) -> int:
    """`channels * width`, rounded, at least 1 (the width multiplier used by tiny test models)."""
    return max(1, round(channels * width))


def check_width(width: float) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ConfigError(f"width must be a positive number, got {width!r}.")
    return float(width)


def global_pool(x: Tensor) -> Tensor:
    """Global average pooling to `(B, C)`; works for any spatial size and memory format."""
    return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
