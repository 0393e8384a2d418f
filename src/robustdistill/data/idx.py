"""Reader of the IDX format used by MNIST and Fashion-MNIST (gzipped or raw), and their registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustdistill.data._io import read_bytes
from robustdistill.data.download import Resource
from robustdistill.data.registry import SPLITS, Locator, register_dataset
from robustdistill.errors import DataError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes; the magic number and the size are checked."""
    raw = read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, not even an IDX header.")
    magic = int.from_bytes(raw[:4], "big")
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] == 0:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (magic number {magic:#010x}).")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path} has magic number {magic}, expected {expected_magic}; wrong or corrupt file.")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: its header is shorter than {header} bytes.")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its header {dims} needs {expected}; "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_images(path: str | Path) -> np.ndarray:
    """Images `(N, 1, H, W)` uint8 from an `*-images-idx3-ubyte[.gz]` file."""
    return read_idx(path, IMAGES_MAGIC)[:, None, :, :]


def read_idx_labels(path: str | Path) -> np.ndarray:
    """Labels `(N,)` int64 from an `*-labels-idx1-ubyte[.gz]` file."""
    return read_idx(path, LABELS_MAGIC).astype(np.int64)


def idx_file(root: str | Path, stem: str) -> Path | None:
    """`root/stem.gz` or `root/stem` (also the `stem.idx3-ubyte` style), whichever exists."""
    root = Path(root)
    for candidate in (f"{stem}.gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (root / candidate).is_file():
            return root / candidate
    return None


def mnist_stems(split: str) -> tuple[str, str]:
    """The official file stems of a split: `train-*` or `t10k-*`."""
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def read_mnist(root: str | Path, split: str, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 1, 28, 28)` and labels of an MNIST-format split stored under `root`."""
    root = Path(root)
    paths = []
    for stem in mnist_stems(split):
        path = idx_file(root, stem)
        if path is None:
            raise DataError(f"{root / (stem + '.gz')} does not exist (nor the uncompressed {stem}).")
        paths.append(path)
    images = read_idx_images(paths[0])
    labels = read_idx_labels(paths[1])
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths[1]} has {labels.shape[0]} labels but {paths[0]} has {images.shape[0]} images.")
    check_labels(labels, num_classes, paths[1])
    return images, labels


def check_labels(labels: np.ndarray, num_classes: int, source: str | Path) -> None:
    """Raise DataError naming `source` when a label is outside `[0, num_classes)`."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataError(f"{source} contains label {int(bad)}, outside [0, {num_classes}); the file is corrupt.")


# --- MNIST and Fashion-MNIST: both ship as the four IDX files ---------------------------------


def _locate_in(torch_folder: str) -> Locator:
    """The folder holding a split's two IDX files: the candidate itself, `raw/` or torchvision's `<folder>/raw/`."""

    def locate(directory: Path, split: str) -> Path | None:
        for sub in (directory, directory / "raw", directory / torch_folder / "raw"):
            if all(idx_file(sub, stem) for stem in mnist_stems(split)):
                return sub
        return None

    return locate


def _files_in(directory: Path, split: str) -> list[Path]:
    return [path for stem in mnist_stems(split) if (path := idx_file(directory, stem)) is not None]


def _read(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_mnist(located, split), None)


def _resources(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[Resource, ...]:
    return tuple(
        Resource(name, tuple(m + name for m in mirrors), md5, ("train",) if name.startswith("train") else ("test",))
        for name, md5 in md5s.items()
    )


def _described(split: str) -> str:
    images, labels = mnist_stems(split)
    return f"{images}.gz and {labels}.gz (or uncompressed)"


_FILES = {split: _described(split) for split in SPLITS}
_AUGMENT = {"padding": 2, "flip": False}  # digits; Fashion-MNIST's shoes all face one way
_SIZES = {"train": 60000, "test": 10000}

register_dataset(
    "mnist",
    num_classes=10,
    shape=(1, 28, 28),
    mean=(0.1307,),
    std=(0.3081,),
    classes=tuple(str(d) for d in range(10)),
    default_eps=0.1,
    augment=_AUGMENT,
    files=_FILES,
    read=_read,
    locate=_locate_in("MNIST"),
    files_in=_files_in,
    folders=("mnist", "MNIST"),
    sizes=_SIZES,
    resources=_resources(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
)
register_dataset(
    "fashion-mnist",
    num_classes=10,
    shape=(1, 28, 28),
    mean=(0.2860,),
    std=(0.3530,),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    default_eps=0.1,
    augment=_AUGMENT,
    files=_FILES,
    read=_read,
    locate=_locate_in("FashionMNIST"),
    files_in=_files_in,
    folders=("fashion-mnist", "fashion_mnist", "FashionMNIST"),
    extra_dirs=("/usr/share/datasets/fashion-mnist",),  # Debian's dataset-fashion-mnist package
    sizes=_SIZES,
    aliases=("fashion_mnist", "fashionmnist", "fmnist"),
    resources=_resources(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
)
