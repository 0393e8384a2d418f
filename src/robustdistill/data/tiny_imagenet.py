"""Reader of Tiny-ImageNet-200 as distributed (`tiny-imagenet-200/`), and its registration; its labelled val set
is our test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustdistill.data.download import Resource
from robustdistill.data.images import decode_images, is_image_file
from robustdistill.data.registry import register_dataset
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


def _locate(directory: Path, split: str) -> Path | None:
    needed = "train" if split == "train" else "val/val_annotations.txt"
    for base in (directory / TINY_FOLDER, directory):
        if (base / "wnids.txt").is_file() and (base / needed).exists():
            return base
    return None


def _read(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return (*read_tiny_imagenet(located, split), tiny_imagenet_classes(located))


register_dataset(
    "tiny-imagenet",
    num_classes=200,
    shape=(3, 64, 64),
    mean=(0.4802, 0.4481, 0.3975),
    std=(0.2770, 0.2691, 0.2821),
    default_eps=8 / 255,
    augment={"padding": 8, "flip": True},  # 1/8 of the side
    files={
        "train": f"{TINY_FOLDER}/wnids.txt and train/<wnid>/images/*.JPEG",
        "test": f"{TINY_FOLDER}/wnids.txt, val/images/*.JPEG and val/val_annotations.txt",
    },
    read=_read,
    locate=_locate,
    folders=("tiny-imagenet", TINY_FOLDER),
    sizes={"train": 100000, "test": 10000},
    aliases=("tinyimagenet", "tiny_imagenet", "tiny-imagenet-200"),
    resources=(
        Resource(
            "tiny-imagenet-200.zip",
            ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
            "90528d7ca1a48142e341f4ef8d21d0de",
            extract=True,
        ),
    ),
)
