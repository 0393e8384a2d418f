"""Reader of the IDX format used by MNIST and Fashion-MNIST (gzipped or raw)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustdistill.data._io import read_bytes
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
        raise DataError(
            f"{paths[1]} has {labels.shape[0]} labels but {paths[0]} has {images.shape[0]} images."
        )
    check_labels(labels, num_classes, paths[1])
    return images, labels


def check_labels(labels: np.ndarray, num_classes: int, source: str | Path) -> None:
    """Raise DataError naming `source` when a label is outside `[0, num_classes)`."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise DataError(
            f"{source} contains label {int(bad)}, outside [0, {num_classes}); the file is corrupt."
        )
