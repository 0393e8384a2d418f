"""Reader of the STL-10 binary files (`stl10_binary/{train,test}_{X,y}.bin`), and its registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustdistill.data.download import Resource
from robustdistill.data.registry import SPLITS, named_files, register_dataset
from robustdistill.errors import DataError

STL10_FOLDER = "stl10_binary"
STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_IMAGE_BYTES = 3 * 96 * 96


def stl10_files(split: str) -> tuple[str, str]:
    """Image and label file names of a split."""
    return f"{split}_X.bin", f"{split}_y.bin"


def read_stl10(root: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 3, 96, 96)` uint8 and labels 0..9 from the folder holding the `.bin` files.

    Each image is stored channel by channel, each channel *column-major*; labels are stored as
    bytes 1..10 and returned minus one.
    """
    root = Path(root)
    x_path, y_path = (root / name for name in stl10_files(split))
    for path in (x_path, y_path):
        if not path.is_file():
            raise DataError(f"{path} does not exist.")
    raw = np.fromfile(x_path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _IMAGE_BYTES:
        raise DataError(f"{x_path} has {raw.size} bytes, not a whole number of 3x96x96 images; it is truncated.")
    images = raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
    if labels.shape[0] != images.shape[0]:
        raise DataError(f"{y_path} has {labels.shape[0]} labels but {x_path} has {images.shape[0]} images.")
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        bad = labels.min() if labels.min() < 1 else labels.max()
        raise DataError(f"{y_path} contains label {int(bad)}, outside 1..10; the file is corrupt.")
    return np.ascontiguousarray(images), labels - 1


def _locate(directory: Path, split: str) -> Path | None:
    for base in (directory / STL10_FOLDER, directory):
        if all((base / name).is_file() for name in stl10_files(split)):
            return base
    return None


def _read(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_stl10(located, split), None)


register_dataset(
    "stl10",
    num_classes=10,
    shape=(3, 96, 96),
    mean=(0.4467, 0.4398, 0.4066),
    std=(0.2603, 0.2566, 0.2713),
    classes=tuple(STL10_CLASSES),
    default_eps=8 / 255,
    augment={"padding": 12, "flip": True},  # 1/8 of the side, as 4 is for 32
    files={split: f"{STL10_FOLDER}/{split}_X.bin and {STL10_FOLDER}/{split}_y.bin" for split in SPLITS},
    read=_read,
    locate=_locate,
    files_in=named_files(stl10_files),
    folders=("stl10", "stl-10"),
    sizes={"train": 5000, "test": 8000},
    aliases=("stl-10", "stl_10"),
    resources=(
        Resource(
            "stl10_binary.tar.gz",
            ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
            "91f7769df0f17e558f3565bffb0c7dfb",
            extract=True,
        ),
    ),
)
