"""Decoding folders of image files (PNG, JPEG, ...) into one uint8 array."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robustdistill.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _size(resize: int | Sequence[int] | None) -> tuple[int, int] | None:
    """`resize` as `(height, width)`."""
    if resize is None:
        return None
    if isinstance(resize, int):
        return resize, resize
    height, width = (int(v) for v in resize)
    return height, width


def decode_images(
    paths: Sequence[Path], *, resize: int | Sequence[int] | None = None, expect: tuple[int, int] | None = None
) -> np.ndarray:
    """Decode `paths` into `(N, C, H, W)` uint8 (C = 1 if every image is grayscale, else 3).

    With `resize` (an int or `(height, width)`) every image is resized bilinearly; otherwise all
    images must share one size (`expect`, if given). Unreadable files raise DataError naming them.
    """
    from PIL import Image, UnidentifiedImageError

    size = _size(resize)
    arrays: list[np.ndarray] = []
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image_file = Image.open(path)
            with image_file as opened:
                opened.load()
                gray = opened.mode in ("1", "L", "LA", "I", "I;16", "F")
                image = opened.convert("L" if gray else "RGB")
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{path} is too large to decode safely (a decompression bomb?): {exc}") from None
        except MemoryError:
            raise DataError(f"{path}: not enough memory to decode this image.") from None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise DataError(f"{path} is not a readable image ({exc}).") from None
        target = size or expect or (arrays[0].shape[:2] if arrays else array.shape[:2])
        if array.shape[:2] != tuple(target):
            raise DataError(
                f"{path} is {array.shape[1]}x{array.shape[0]} but the others are {target[1]}x{target[0]}; "
                "pass resize=... to resize every image."
            )
        arrays.append(array)
    if not arrays:
        height, width = size or expect or (0, 0)
        return np.zeros((0, 3, height, width), dtype=np.uint8)
    channels = 1 if all(a.ndim == 2 for a in arrays) else 3
    out = np.empty((len(arrays), channels, *arrays[0].shape[:2]), dtype=np.uint8)
    for i, array in enumerate(arrays):
        out[i] = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return out
