"""Small file helpers shared by the readers: reading (possibly gzipped) bytes with one-line errors."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from robustdistill.errors import DataError


def read_bytes(path: str | Path) -> bytes:
    """Read a file, gunzipping it when it starts with the gzip magic; errors name the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist.") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}.") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is a damaged or truncated gzip file ({exc}); download it again.") from None
    return raw
