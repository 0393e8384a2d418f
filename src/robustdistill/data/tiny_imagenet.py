"""Reader of Tiny-ImageNet-200 as distributed (`tiny-imagenet-200/`); its labelled val set is our test."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustdistill.data.images import decode_images, is_image_file
from robustdistill.errors import DataError

TINY_FOLDER = "tiny-imagenet-200"


def tiny_imagenet_classes(root: str | Path) -> list[str]:
    """The WordNet ids of `wnids.txt`, sorted (the label order of ImageFolder on `train/`)."""
    path = Path(root) / "wnids.txt"
    try:
        wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise DataError(f"{path} does not exist.") from None
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"{path} must list distinct WordNet ids, one per line.")
    return sorted(wnids)


def read_tiny_imagenet(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 3, 64, 64)` uint8 and labels (index into the sorted wnids).

    `train` reads `train/<wnid>/images/*`; `test` reads `val/images/*` labelled by
    `val/val_annotations.txt` (the official test set has no labels).
    """
    root = Path(root)
    classes = tiny_imagenet_classes(root)
    index = {wnid: i for i, wnid in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for wnid in classes:
            folder = root / "train" / wnid / "images"
            files = sorted(p for p in folder.glob("*") if is_image_file(p)) if folder.is_dir() else []
            if not files:
                raise DataError(f"{folder} has no images; the train split is incomplete.")
            paths.extend(files)
            labels.extend([index[wnid]] * len(files))
    else:
        annotations = root / "val" / "val_annotations.txt"
        try:
            lines = annotations.read_text().splitlines()
        except FileNotFoundError:
            raise DataError(f"{annotations} does not exist.") from None
        for number, line in enumerate(lines, 1):
            fields = line.split("\t") if "\t" in line else line.split()
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(f"{annotations} line {number} has no known wnid: {line.strip()[:60]!r}.")
            paths.append(root / "val" / "images" / fields[0])
            labels.append(index[fields[1]])
        for path in paths:
            if not path.is_file():
                raise DataError(f"{path} is listed in {annotations} but does not exist.")
    images = decode_images(paths, expect=(64, 64))
    if images.shape[1] == 1:  # every image grayscale: keep three channels like the rest of the set
        images = np.repeat(images, 3, axis=1)
    return images, np.asarray(labels, dtype=np.int64)
