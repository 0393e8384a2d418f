"""CIFAR-10 / CIFAR-100 "python version" pickles, from a folder or the .tar.gz: readers and registration."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robustdistill.data.download import Resource
from robustdistill.data.idx import check_labels
from robustdistill.data.registry import SPLITS, Locator, named_files, register_dataset
from robustdistill.data.safe_pickle import safe_loads
from robustdistill.errors import DataError

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"


def cifar10_files(split: str) -> list[str]:
    """Batch file names of a CIFAR-10 split."""
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def cifar100_files(split: str) -> list[str]:
    """Batch file names of a CIFAR-100 split."""
    return ["train"] if split == "train" else ["test"]


def _read_members(source: Path, folder: str, names: list[str]) -> list[tuple[str, bytes]]:
    """Raw bytes of `names` from a folder (the batches folder or its parent) or a tar archive."""
    if source.is_file():
        try:
            with tarfile.open(source, "r:*") as archive:
                out = []
                for name in names:
                    member_name = f"{folder}/{name}"
                    try:
                        member = archive.getmember(member_name)
                    except KeyError:
                        raise DataError(f"{source} has no member {member_name}; wrong or incomplete archive.") from None
                    if not member.isfile():  # extractfile would follow a link to another member
                        raise DataError(f"{source}: {member_name} is a link or not a regular file; refusing it.")
                    handle = archive.extractfile(member)
                    if handle is None:
                        raise DataError(f"{source}: {member_name} is not a regular file.")
                    out.append((f"{source}:{member_name}", handle.read()))
                return out
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{source} is a damaged or truncated archive ({exc}); download it again.") from None
    base = source / folder if (source / folder).is_dir() else source
    out = []
    for name in names:
        path = base / name
        try:
            out.append((str(path), path.read_bytes()))
        except FileNotFoundError:
            raise DataError(f"{path} does not exist.") from None
    return out


def _decode_batch(blob: bytes, source: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch: Any = safe_loads(blob, source)
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise DataError(f"{source} is not a CIFAR batch: it lacks the 'data' or '{label_key}' entry.")
    data, labels = batch["data"], batch[label_key]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{source}: 'data' must be a uint8 array of shape (N, 3072), got {shape}.")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{source}: '{label_key}' is not a list of integers.") from None
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"{source} has {data.shape[0]} images but {labels.shape[0]} labels.")
    return data.reshape(-1, 3, 32, 32), labels


def _read_cifar(
    source: str | Path, folder: str, names: list[str], label_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for where, blob in _read_members(Path(source), folder, names):
        x, y = _decode_batch(blob, where, label_key)
        check_labels(y, num_classes, where)
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def read_cifar10(source: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 `(N, 3, 32, 32)` uint8 and labels from `cifar-10-batches-py/` or the `.tar.gz`."""
    return _read_cifar(source, CIFAR10_FOLDER, cifar10_files(split), "labels", 10)


def read_cifar100(source: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100 images and the 100 *fine* labels from `cifar-100-python/` or the `.tar.gz`."""
    return _read_cifar(source, CIFAR100_FOLDER, cifar100_files(split), "fine_labels", 100)


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

CIFAR100_CLASSES = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
]


# --- registration -------------------------------------------------------------------------------


def _locate_in(folder: str, archive: str, files: Callable[[str], list[str]]) -> Locator:
    """The batches folder (`<candidate>/<folder>` or the candidate itself), else the unextracted archive."""

    def locate(directory: Path, split: str) -> Path | None:
        for base in (directory / folder, directory):
            if all((base / name).is_file() for name in files(split)):
                return base
        return directory / archive if (directory / archive).is_file() else None

    return locate


def _read10(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_cifar10(located, split), None)


def _read100(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_cifar100(located, split), None)


_AUGMENT = {"padding": 4, "flip": True}  # the standard recipe
_SIZES = {"train": 50000, "test": 10000}
_TORONTO = "https://www.cs.toronto.edu/~kriz/"

register_dataset(
    "cifar10",
    num_classes=10,
    shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2471, 0.2435, 0.2616),
    classes=tuple(CIFAR10_CLASSES),
    default_eps=8 / 255,
    augment=_AUGMENT,
    files={
        "train": f"{CIFAR10_FOLDER}/data_batch_1..5 or {CIFAR10_ARCHIVE}",
        "test": f"{CIFAR10_FOLDER}/test_batch or {CIFAR10_ARCHIVE}",
    },
    read=_read10,
    locate=_locate_in(CIFAR10_FOLDER, CIFAR10_ARCHIVE, cifar10_files),
    files_in=named_files(cifar10_files),
    folders=("cifar10", "cifar-10"),
    sizes=_SIZES,
    aliases=("cifar-10", "cifar_10"),
    resources=(Resource(CIFAR10_ARCHIVE, (_TORONTO + CIFAR10_ARCHIVE,), "c58f30108f718f92721af3b95e74349a"),),
)
register_dataset(
    "cifar100",
    num_classes=100,
    shape=(3, 32, 32),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    classes=tuple(CIFAR100_CLASSES),
    default_eps=8 / 255,
    augment=_AUGMENT,
    files={split: f"{CIFAR100_FOLDER}/{split} or {CIFAR100_ARCHIVE}" for split in SPLITS},
    read=_read100,
    locate=_locate_in(CIFAR100_FOLDER, CIFAR100_ARCHIVE, cifar100_files),
    files_in=named_files(cifar100_files),
    folders=("cifar100", "cifar-100"),
    sizes=_SIZES,
    aliases=("cifar-100", "cifar_100"),
    resources=(Resource(CIFAR100_ARCHIVE, (_TORONTO + CIFAR100_ARCHIVE,), "eb9058c3a382ffc7106e4002c42a8d85"),),
)
