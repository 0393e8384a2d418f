"""Reader of an ImageFolder tree (`root/<class>/<image>`, class names sorted), and its registration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from robustdistill.data.images import decode_images, is_image_file
from robustdistill.data.registry import register_dataset
from robustdistill.errors import DataError


def imagefolder_classes(root: str | Path) -> list[str]:
    """Sorted names of the class sub-folders of `root`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory of class folders.")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected root/<class>/<image files>.")
    return classes


def read_imagefolder(root: str | Path, resize: int | Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, C, H, W)` uint8 and labels (index of the class in sorted order).

    Images are found recursively under each class folder and sorted by path; C is 1 when every
    image is grayscale, else 3. Without `resize`, all images must have the same size.
    """
    root = Path(root)
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(imagefolder_classes(root)):
        files = sorted(p for p in (root / name).rglob("*") if is_image_file(p))
        if not files:
            raise DataError(f"{root / name} contains no image files.")
        paths.extend(files)
        labels.extend([label] * len(files))
    return decode_images(paths, resize=resize), np.asarray(labels, dtype=np.int64)


def _locate(directory: Path, split: str) -> Path | None:
    """`root/train` for train, `root/test` or `root/val` for test, else `root` itself when it has sub-folders."""
    for name in ("train",) if split == "train" else ("test", "val"):
        if (directory / name).is_dir():
            return directory / name
    if any(p.is_dir() for p in directory.iterdir()):
        return directory
    return None


def _read(
    located: Path, split: str, resize: int | Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return (*read_imagefolder(located, resize=resize), imagefolder_classes(located))


register_dataset(
    "imagefolder",  # classes, shape and mean/std come from the tree; no augmentation default
    files={
        "train": "root/<class>/<image> (or root/train/<class>/<image>)",
        "test": "root/test/<class>/<image> or root/val/<class>/<image> (else root/<class>/<image>)",
    },
    read=_read,
    locate=_locate,
    needs_data_dir=True,
    options=("resize",),
    aliases=("image-folder", "image_folder"),
)
