"""Downloading official dataset files with checksum verification, and safe archive extraction."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from robustdistill.errors import DataError

log = logging.getLogger(__name__)

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)


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


def _idx_resources(mirrors: tuple[str, ...], md5s: dict[str, str]) -> tuple[Resource, ...]:
    return tuple(
        Resource(
            name, tuple(m + name for m in mirrors), md5, ("train",) if name.startswith("train") else ("test",)
        )
        for name, md5 in md5s.items()
    )


# The checksums published with (and widely re-used from) the official distributions.
RESOURCES: dict[str, tuple[Resource, ...]] = {
    "mnist": _idx_resources(
        _MNIST_MIRRORS,
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": _idx_resources(
        _FASHION_MIRRORS,
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "cifar10": (
        Resource(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            "c58f30108f718f92721af3b95e74349a",
        ),
    ),
    "cifar100": (
        Resource(
            "cifar-100-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            "eb9058c3a382ffc7106e4002c42a8d85",
        ),
    ),
    "svhn": (
        Resource(
            "train_32x32.mat",
            ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
            "e26dedcc434d2e4c54c9b2d4a06d8373",
            ("train",),
        ),
        Resource(
            "test_32x32.mat",
            ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
            "eb5a983be6a315427106f1b164d9cef3",
            ("test",),
        ),
    ),
    "stl10": (
        Resource(
            "stl10_binary.tar.gz",
            ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
            "91f7769df0f17e558f3565bffb0c7dfb",
            extract=True,
        ),
    ),
    "tiny-imagenet": (
        Resource(
            "tiny-imagenet-200.zip",
            ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
            "90528d7ca1a48142e341f4ef8d21d0de",
            extract=True,
        ),
    ),
}


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file (`md5` or `sha256`)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_checksum(path: str | Path, expected: str) -> None:
    """Raise DataError naming `path` unless its MD5 (32 hex digits) or SHA-256 (64) is `expected`."""
    algorithm = "sha256" if len(expected) == 64 else "md5"
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise DataError(
            f"{path} has {algorithm.upper()} {actual}, expected {expected}; "
            "the download is corrupt, delete it and retry."
        )


def fetch(resource: Resource, folder: str | Path, *, timeout: float = 60.0) -> Path:
    """Download `resource` into `folder` (trying each mirror), verify it, unpack it if needed.

    An existing file with the right checksum is reused. Network failures raise DataError; a
    checksum mismatch deletes the partial file and raises DataError naming it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / resource.filename
    if not (target.is_file() and file_digest(target) == resource.md5):
        errors = []
        for url in resource.urls:
            partial = target.with_name(target.name + ".part")
            try:
                log.info("downloading %s", url)
                with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                partial.unlink(missing_ok=True)
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            try:
                verify_checksum(partial, resource.md5)
            except DataError:
                partial.unlink(missing_ok=True)
                raise DataError(
                    f"{target} downloaded from {url} does not match its published MD5 {resource.md5}; "
                    "retry later or fetch it by hand."
                ) from None
            os.replace(partial, target)
            break
        else:
            raise DownloadFailed(f"could not download {resource.filename} ({'; '.join(errors)}).")
    if resource.extract:
        extract(target, folder)
    return target


def _safe_member(name: str, destination: Path) -> None:
    resolved = (destination / name).resolve()
    if not resolved.is_relative_to(destination.resolve()):
        raise DataError(
            f"archive member {name!r} would be written outside {destination}; refusing to unpack."
        )


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
                        raise DataError(
                            f"{archive} contains the link or device {info.filename!r}; refusing to unpack."
                        )
                bundle.extractall(destination)
        else:
            with tarfile.open(archive, "r:*") as bundle:
                members = bundle.getmembers()
                for member in members:
                    _safe_member(member.name, destination)
                    if not (member.isfile() or member.isdir()):
                        raise DataError(
                            f"{archive} contains the link or device {member.name!r}; refusing to unpack."
                        )
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                    bundle.extractall(destination, members=members, filter="data")
                else:
                    bundle.extractall(destination, members=members)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DataError(f"{archive} is a damaged archive ({exc}); delete it and download again.") from None
    marker.touch()
