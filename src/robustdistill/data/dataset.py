"""`ArrayDataset`: a whole labelled image dataset held in memory as uint8 tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from robustdistill.errors import DataError


@dataclass
class ArrayDataset:
    """Images `(N, C, H, W)` uint8, labels `(N,)` int64 in `[0, num_classes)`, plus metadata.

    `mean` and `std` are per-channel statistics of `images / 255` for the model's normalisation
    layer; loaders never normalise. NumPy arrays are accepted and converted without copying.
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    num_classes: int
    name: str
    split: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        where = f"dataset '{self.name}' ({self.split})"
        if isinstance(self.images, np.ndarray):
            self.images = torch.from_numpy(np.ascontiguousarray(self.images))
        if isinstance(self.labels, np.ndarray):
            self.labels = torch.from_numpy(np.ascontiguousarray(self.labels))
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            got = getattr(self.images, "dtype", type(self.images).__name__)
            raise DataError(f"{where}: images must be a uint8 tensor, got {got}.")
        if self.images.dim() != 4:
            raise DataError(f"{where}: images must have shape (N, C, H, W), got {tuple(self.images.shape)}.")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
            got = getattr(self.labels, "dtype", type(self.labels).__name__)
            raise DataError(f"{where}: labels must be an int64 tensor, got {got}.")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"{where}: labels must have shape ({self.images.shape[0]},) to match the images, "
                f"got {tuple(self.labels.shape)}."
            )
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise DataError(f"{where}: num_classes must be a positive integer, got {self.num_classes!r}.")
        if self.labels.numel() > 0:
            low, high = int(self.labels.min()), int(self.labels.max())
            if low < 0 or high >= self.num_classes:
                bad = low if low < 0 else high
                raise DataError(f"{where}: label {bad} is outside [0, {self.num_classes}).")
        channels = self.images.shape[1]
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != channels or len(self.std) != channels:
            raise DataError(
                f"{where}: mean and std need {channels} values (one per channel), "
                f"got {len(self.mean)} and {len(self.std)}."
            )
        if any(not s > 0 for s in self.std):
            raise DataError(f"{where}: std values must be positive, got {self.std}.")
        if self.classes is not None:
            self.classes = [str(c) for c in self.classes]
            if len(self.classes) != self.num_classes:
                raise DataError(f"{where}: {len(self.classes)} class names given for {self.num_classes} classes.")

    def __repr__(self) -> str:
        return (
            f"ArrayDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, shape={self.shape}, "
            f"num_classes={self.num_classes})"
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One `(image uint8 (C, H, W), label)` pair."""
        return self.images[index], int(self.labels[index])

    @property
    def shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def channel_stats(images: torch.Tensor | np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of `images / 255` (uint8 `(N, C, H, W)`), computed in float64."""
    x = torch.as_tensor(images)
    if x.numel() == 0:
        channels = x.shape[1] if x.dim() == 4 else 1
        return (0.5,) * channels, (0.25,) * channels
    total = x.shape[0] * x.shape[2] * x.shape[3]
    sums = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros(x.shape[1], dtype=torch.float64)
    for chunk in torch.split(x, 4096):
        c = chunk.to(torch.float64).div_(255.0)
        sums += c.sum(dim=(0, 2, 3))
        squares += c.square().sum(dim=(0, 2, 3))
    mean = sums / total
    std = (squares / total - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
