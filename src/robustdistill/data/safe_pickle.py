"""A restricted unpickler for dataset files: plain containers and NumPy arrays, nothing else."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from robustdistill.errors import DataError

# The callables a NumPy array (or scalar) pickle refers to, looked up from NumPy itself so that
# both the `numpy.core` (NumPy 1.x) and `numpy._core` (NumPy 2.x) spellings resolve.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0.0).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5 arrays: bytes -> array, nothing more

_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): __import__("codecs").encode,  # protocol-2 pickles spell bytes this way
    ("builtins", "bytearray"): bytearray,
    ("__builtin__", "bytearray"): bytearray,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _RECONSTRUCT
    _ALLOWED[(_module, "scalar")] = _SCALAR
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = _FROMBUFFER


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `_ALLOWED`; every other global is refused."""

    def __init__(self, file: IO[bytes], source: str) -> None:
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._source} refers to the Python object {module}.{name}, which a dataset file "
                "never needs; refusing to unpickle it (the file is corrupt or unsafe)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._source} uses persistent ids; refusing to unpickle it.")


def _normalise_keys(obj: Any) -> Any:
    """Decode bytes keys of dictionaries (Python 2 pickles) to str, recursively."""
    if isinstance(obj, dict):
        return {
            (key.decode("latin1") if isinstance(key, bytes) else key): _normalise_keys(value)
            for key, value in obj.items()
        }
    return obj


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle `data` allowing only containers, numbers, strings, bytes and NumPy arrays.

    Python 2 pickles (CIFAR) are read with ``encoding="bytes"``; dictionary keys are decoded
    to ``str``. Any other global, or a malformed stream, raises `DataError` naming `source`.
    """
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as exc:  # pickle raises many kinds on garbage input
        raise DataError(f"{source} is not a readable pickle ({type(exc).__name__}: {exc}).") from None
    return _normalise_keys(obj)


def safe_load_file(path: str | Path) -> Any:
    """`safe_loads` on the contents of a file (transparently gunzipped when it ends in .gz)."""
    from robustdistill.data._io import read_bytes

    return safe_loads(read_bytes(path), source=str(path))
