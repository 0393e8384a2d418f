"""Reader of the SVHN cropped-digits `.mat` files (`train_32x32.mat`, `test_32x32.mat`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
