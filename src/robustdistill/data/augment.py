"""Batched, seeded augmentation in plain torch: random crop with zero padding and horizontal flip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from robustdistill.errors import ConfigError


@dataclass(frozen=True)
class CropFlipParams:
    """Per-sample parameters: crop offsets `top`, `left` in `[0, 2 * padding]` and `flip` flags."""

    top: torch.Tensor
    left: torch.Tensor
    flip: torch.Tensor

    def __getitem__(self, index: slice | torch.Tensor) -> CropFlipParams:
        return CropFlipParams(self.top[index], self.left[index], self.flip[index])


def sample_crop_flip(n: int, padding: int, flip: bool, generator: torch.Generator | None = None) -> CropFlipParams:
    """Draw the crop/flip parameters of `n` samples from `generator`.

    The values depend on `n`; a caller that needs the same parameters for a sample whatever the batch
    is split into (the `Loader` across ranks) draws one fixed size and slices it.
    """
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return CropFlipParams(top, left, flips)


def apply_crop_flip(x: torch.Tensor, padding: int, params: CropFlipParams) -> torch.Tensor:
    """Crop `x` `(B, C, H, W)` (any dtype) from its zero-padded version and flip, without a per-sample loop.

    Output pixel `(i, j)` of sample b is padded pixel `(top_b + i, left_b + j')` with `j' = W-1-j` if flipped,
    so content moves by `padding - top_b` rows and `padding - left_b` columns (at most `padding`).
    """
    batch, _, height, width = x.shape
    if batch == 0:
        return x
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = params.top.to(x.device)[:, None] + torch.arange(height, device=x.device)  # (B, H)
    cols = torch.arange(width, device=x.device).expand(batch, width)
    cols = torch.where(params.flip.to(x.device)[:, None], cols.flip(1), cols)
    cols = params.left.to(x.device)[:, None] + cols  # (B, W)
    sample = torch.arange(batch, device=x.device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 around a slice: the result is (B, H, W, C).
    out = padded[sample, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop_flip(
    x: torch.Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample random crop of `x` `(B, C, H, W)` zero-padded by `padding`, and horizontal flip
    with probability 0.5 when `flip`; reproducible from `generator`. Values are only moved, so a
    batch in `[0, 1]` stays in `[0, 1]`."""
    if padding < 0:
        raise ConfigError(f"augmentation padding must be >= 0, got {padding}.")
    return apply_crop_flip(x, padding, sample_crop_flip(x.shape[0], padding, flip, generator))


def check_augment(augment: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate an `{"padding": int, "flip": bool}` mapping (None or {} means no augmentation)."""
    if not augment:
        return None
    unknown = sorted(set(augment) - {"padding", "flip"})
    if unknown:
        raise ConfigError(f"unknown augmentation option(s) {', '.join(unknown)}; use 'padding' and 'flip'.")
    padding = augment.get("padding", 0)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ConfigError(f"augmentation padding must be an integer >= 0, got {padding!r}.")
    return {"padding": padding, "flip": bool(augment.get("flip", False))}
