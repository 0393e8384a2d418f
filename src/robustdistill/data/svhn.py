"""Reader of the SVHN cropped-digits `.mat` files (`train_32x32.mat`, `test_32x32.mat`), and its registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustdistill.data.download import Resource
from robustdistill.data.registry import SPLITS, register_dataset
from robustdistill.errors import DataError


def svhn_file(split: str) -> str:
    """The official file name of a split."""
    return f"{split}_32x32.mat"


def read_svhn(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 3, 32, 32)` uint8 and labels 0..9 from one SVHN `.mat` file.

    The file stores `X` as `(32, 32, 3, N)` (HWCN) and `y` as `(N, 1)` with values 1..10, where 10
    stands for the digit 0; labels are returned as the digit itself.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist.")
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError... on damaged files
        raise DataError(f"{path} is not a readable MATLAB file ({type(exc).__name__}: {exc}).") from None
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the 'X' or 'y' variable of an SVHN file.")
    x, y = mat["X"], mat["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{path}: 'X' must have shape (32, 32, 3, N), got {x.shape}.")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.number) or (x.size and (x.min() < 0 or x.max() > 255)):
            raise DataError(f"{path}: 'X' must hold bytes 0..255, got dtype {x.dtype}.")
        x = x.astype(np.uint8)
    labels = np.asarray(y).reshape(-1).astype(np.int64)
    if labels.shape[0] != x.shape[3]:
        raise DataError(f"{path} has {x.shape[3]} images but {labels.shape[0]} labels.")
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        bad = labels.min() if labels.min() < 1 else labels.max()
        raise DataError(f"{path} contains label {int(bad)}, outside 1..10; the file is corrupt.")
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


def _locate(directory: Path, split: str) -> Path | None:
    path = directory / svhn_file(split)
    return path if path.is_file() else None


def _read(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_svhn(located), None)


def _resource(split: str, md5: str) -> Resource:
    return Resource(svhn_file(split), (f"http://ufldl.stanford.edu/housenumbers/{svhn_file(split)}",), md5, (split,))


register_dataset(
    "svhn",
    num_classes=10,
    shape=(3, 32, 32),
    mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970),
    classes=tuple(str(d) for d in range(10)),
    default_eps=8 / 255,
    augment={"padding": 4, "flip": False},  # mirrored digits are different or invalid digits
    files={split: svhn_file(split) for split in SPLITS},
    read=_read,
    locate=_locate,
    folders=("svhn", "SVHN"),
    sizes={"train": 73257, "test": 26032},
    resources=(
        _resource("train", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        _resource("test", "eb5a983be6a315427106f1b164d9cef3"),
    ),
)
