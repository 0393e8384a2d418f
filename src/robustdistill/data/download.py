"""Downloading official dataset files with checksum verification, and safe archive extraction."""

from __future__ import annotations

import hashlib
import logging
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from robustdistill.errors import DataError
from robustdistill.utils import atomic_writer

log = logging.getLogger(__name__)


class DownloadFailed(DataError):
    """No mirror of a file could be reached (as opposed to a corrupt download)."""


@dataclass(frozen=True)
class Resource:
    """One official file: where it comes from, its MD5, which splits need it, whether to unpack it."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    splits: tuple[str, ...] = ("train", "test")
    extract: bool = False


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file (`md5` or `sha256`)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(resource: Resource, folder: str | Path, *, timeout: float = 60.0) -> Path:
    """Download `resource` into `folder` (trying each mirror), verify it, unpack it if needed.

    An existing file with the right checksum is reused. The download is streamed through
    `utils.atomic_writer` while its MD5 is computed: the file appears only once complete and verified.
    Network failures raise DownloadFailed; a checksum mismatch leaves nothing behind and raises
    DataError naming the file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / resource.filename
    if not (target.is_file() and file_digest(target) == resource.md5):
        errors = []
        for url in resource.urls:
            try:
                log.info("downloading %s", url)
                with urllib.request.urlopen(url, timeout=timeout) as response, atomic_writer(target) as out:
                    digest = hashlib.new("md5")
                    while block := response.read(1 << 20):
                        digest.update(block)
                        out.write(block)
                    if digest.hexdigest() != resource.md5:
                        raise DataError(
                            f"{target} downloaded from {url} does not match its published MD5 {resource.md5}; "
                            "retry later or fetch it by hand."
                        )
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            break
        else:
            raise DownloadFailed(f"could not download {resource.filename} ({'; '.join(errors)}).")
    if resource.extract:
        extract(target, folder)
    return target


def _safe_member(name: str, destination: Path) -> None:
    resolved = (destination / name).resolve()
    if not resolved.is_relative_to(destination.resolve()):
        raise DataError(f"archive member {name!r} would be written outside {destination}; refusing to unpack.")


def extract(archive: str | Path, destination: str | Path) -> None:
    """Unpack a `.zip` or tar archive into `destination`, refusing links and paths that escape it."""
    archive, destination = Path(archive), Path(destination)
    marker = destination / f".{archive.name}.extracted"
    if marker.exists():
        return
    try:
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as bundle:
                for info in bundle.infolist():
                    _safe_member(info.filename, destination)
                    mode = info.external_attr >> 16
                    if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                        raise DataError(f"{archive} contains the link or device {info.filename!r}; refusing to unpack.")
                bundle.extractall(destination)
        else:
            with tarfile.open(archive, "r:*") as bundle:
                members = bundle.getmembers()
                for member in members:
                    _safe_member(member.name, destination)
                    if not (member.isfile() or member.isdir()):
                        raise DataError(f"{archive} contains the link or device {member.name!r}; refusing to unpack.")
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                    bundle.extractall(destination, members=members, filter="data")
                else:
                    bundle.extractall(destination, members=members)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DataError(f"{archive} is a damaged archive ({exc}); delete it and download again.") from None
    marker.touch()
