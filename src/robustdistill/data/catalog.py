"""The dataset registry: names, expected files, root discovery, download, and `load`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustdistill.data import cifar, idx, stl10, svhn, tiny_imagenet
from robustdistill.data.animal_mnist import ANIMAL_CLASSES, read_animal_mnist
from robustdistill.data.dataset import ArrayDataset, channel_stats
from robustdistill.data.digits import read_digits
from robustdistill.data.download import RESOURCES, DownloadFailed, fetch
from robustdistill.data.imagefolder import imagefolder_classes, read_imagefolder
from robustdistill.data.synthetic import synthetic
from robustdistill.errors import ConfigError, DataError
from robustdistill.registry import Registry

ENV_VAR = "ROBUSTDISTILL_DATA"
SPLITS = ("train", "test")
_VALIDATION_NAMES = ("val", "valid", "validation")

Reader = Callable[..., tuple[np.ndarray, np.ndarray, "list[str] | None"]]
Locator = Callable[[Path, str], "Path | None"]


@dataclass(frozen=True)
class DatasetSpec:
    """What the library knows about one dataset: its shape, statistics, files and reader."""

    name: str
    num_classes: int | None
    shape: tuple[int, int, int] | None
    mean: tuple[float, ...] | None  # None: computed from the loaded images
    std: tuple[float, ...] | None
    files: dict[str, str]  # split -> the expected files, in words (for errors and info)
    read: Reader | None  # read(located, split, **options) -> (images, labels, classes or None)
    locate: Locator | None = None  # None: the data ships with a Python package, no files to find
    classes: tuple[str, ...] | None = None
    augment: dict[str, Any] | None = None
    folders: tuple[str, ...] = ()  # sub-folder names tried under data_dir and $ROBUSTDISTILL_DATA
    extra_dirs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    sizes: dict[str, int] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    build: Callable[..., ArrayDataset] | None = None  # replaces read/locate entirely (synthetic)
    default_eps: float = 8 / 255  # the L-inf budget of the literature for this dataset
    files_in: Callable[[Path, str], list[Path]] | None = None  # located folder -> its files (None: itself)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry under `spec.name` and `spec.aliases`."""
    DATASETS.register(spec.name, aliases=spec.aliases)(lambda: spec)
    return spec


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset name or alias (ConfigError with a suggestion if unknown)."""
    return DATASETS.get(name)()


def available() -> list[str]:
    """Canonical names of every registered dataset, sorted."""
    return DATASETS.names()


def cache_dir(name: str) -> Path:
    """`~/.cache/robustdistill/<name>`: where `download=True` puts files."""
    return Path.home() / ".cache" / "robustdistill" / name


def search_dirs(spec: DatasetSpec, data_dir: str | Path | None = None) -> list[Path]:
    """The directories tried, in order.

    An explicit `data_dir` is the only place looked: the directory itself and its sub-folders named
    after the dataset (`spec.folders`). Without one: each $ROBUSTDISTILL_DATA entry (os.pathsep-
    separated, with the same sub-folders), known system paths, then the cache.
    """
    if data_dir is not None:
        bases = [Path(data_dir).expanduser()]
    else:
        bases = [Path(part).expanduser() for part in os.environ.get(ENV_VAR, "").split(os.pathsep) if part]
    dirs: list[Path] = []
    for base in bases:
        dirs.append(base)
        dirs.extend(base / folder for folder in spec.folders)
    if data_dir is None:
        dirs.extend(Path(d) for d in spec.extra_dirs)
        dirs.append(cache_dir(spec.name))
    return list(dict.fromkeys(dirs))


def download_dir(spec: DatasetSpec, data_dir: str | Path | None = None) -> Path:
    """Where `download=True` puts files: the explicit data_dir, else the cache."""
    return Path(data_dir).expanduser() if data_dir is not None else cache_dir(spec.name)


def _missing(spec: DatasetSpec, split: str, data_dir: str | Path | None, reason: str = "") -> DataError:
    if data_dir is not None:
        bases = [str(Path(data_dir).expanduser())]
    else:
        bases = [p for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    searched = []
    for base in dict.fromkeys(bases):
        searched.append(base)
        if spec.folders:
            searched.append(f"{base}/{{{','.join(spec.folders)}}}")
    remedy = "add --download" if spec.name in RESOURCES else "download it by hand"
    because = f" ({reason})" if reason else ""
    if data_dir is not None:
        return DataError(
            f"{spec.name} ({split}) not found in --data-dir{because}: expected {spec.files[split]}; "
            f"searched only {', '.join(searched)} (an explicit --data-dir is the only place looked); "
            f"put the files there, {remedy}, or drop --data-dir."
        )
    searched += [*spec.extra_dirs, str(cache_dir(spec.name))]
    return DataError(
        f"{spec.name} ({split}) not found{because}: expected {spec.files[split]}; "
        f"searched {', '.join(searched)}; pass --data-dir DIR, set {ENV_VAR}=DIR, or {remedy}."
    )


def _check_data_dir(name: str, data_dir: str | Path | None, download: bool) -> None:
    if data_dir is None:
        return
    path = Path(data_dir).expanduser()
    if path.is_dir() or (download and not path.exists()):
        return
    what = "is not a directory" if path.exists() else "does not exist"
    raise DataError(f"--data-dir '{data_dir}' {what}; pass the folder that holds the {name} files.")


def locate(name: str, split: str = "train", data_dir: str | Path | None = None) -> Path | None:
    """Where the files of `name`/`split` are (the path its reader takes), or None if not found."""
    spec = get_spec(name)
    split = _check_split(split)
    if spec.locate is None:
        return None
    for directory in search_dirs(spec, data_dir):
        if directory.is_dir():
            found = spec.locate(directory, split)
            if found is not None:
                return found
    return None


def source_files(name: str, split: str = "train", data_dir: str | Path | None = None) -> list[str]:
    """The resolved paths of the files `load(name, split, data_dir)` reads ([] for bundled data)."""
    spec = get_spec(name)
    split = _check_split(split)
    if spec.build is not None or (spec.locate is None and spec.name != "imagefolder"):
        return []
    if spec.name == "imagefolder":
        located = _locate_imagefolder(Path(data_dir).expanduser(), split) if data_dir is not None else None
    else:
        located = locate(spec.name, split, data_dir)
    if located is None:
        return []
    files = spec.files_in(located, split) if spec.files_in is not None and located.is_dir() else [located]
    return [str(path.resolve()) for path in files]


def _check_split(split: str) -> str:
    split = split.strip().lower()
    if split in _VALIDATION_NAMES:
        raise ConfigError(
            f"'{split}' is not a file split: the validation split is carved from the training split; "
            "use data.split_validation(data.load(name, 'train'), size) (the val_size key in a run)."
        )
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; use 'train' or 'test'.")
    return split


def load(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = False,
    **options: Any,
) -> ArrayDataset:
    """Load a whole split of a registered dataset into memory.

    Files are searched in `search_dirs` order; with `download=True`, missing files are fetched
    into `cache_dir(name)` and checked against their published MD5. `options` are dataset
    specific (for example `resize` for `imagefolder`). There is no `val` split on disk: see
    `data.split_validation`.
    """
    spec = get_spec(name)
    split = _check_split(split)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ConfigError(
            f"dataset '{spec.name}' has no option {', '.join(unknown)}; its options: {allowed}."
        )
    if spec.build is not None:
        return spec.build(split=split, **options)
    if spec.locate is not None or spec.name == "imagefolder":
        _check_data_dir(spec.name, data_dir, download)
    if spec.name == "imagefolder":
        if data_dir is None:
            raise DataError(
                "imagefolder needs a data directory laid out as root/<class>/<image> "
                "(optionally root/train/... and root/test/...); pass --data-dir DIR."
            )
        located: Path | None = _locate_imagefolder(Path(data_dir).expanduser(), split)
        if located is None:
            raise DataError(f"{data_dir} has no class sub-folders; expected {spec.files[split]}.")
    elif spec.locate is None:
        located = None
    else:
        located = locate(spec.name, split, data_dir)
        if located is None and download:
            if spec.name not in RESOURCES:
                raise _missing(spec, split, data_dir, "it cannot be downloaded automatically")
            target = download_dir(spec, data_dir)
            try:
                for resource in RESOURCES[spec.name]:
                    if split in resource.splits:
                        fetch(resource, target)
            except DownloadFailed as exc:
                raise _missing(spec, split, data_dir, f"download failed: {exc}") from None
            located = spec.locate(target, split)
        if located is None:
            raise _missing(spec, split, data_dir)
    assert spec.read is not None
    try:
        images, labels, classes = spec.read(located, split, **options)
    except MemoryError:
        raise DataError(
            f"not enough memory to read {spec.name} ({split}) from {located}; free memory or use a smaller dataset."
        ) from None
    return _to_dataset(spec, split, images, labels, classes, located)


def _to_dataset(
    spec: DatasetSpec,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[str] | None,
    source: Path | None,
) -> ArrayDataset:
    where = source or spec.name
    if spec.shape is not None and tuple(images.shape[1:]) != spec.shape:
        raise DataError(f"{where} holds images of shape {tuple(images.shape[1:])}, expected {spec.shape}.")
    classes = list(classes) if classes is not None else (list(spec.classes) if spec.classes else None)
    num_classes = len(classes) if classes is not None else spec.num_classes
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 1
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where} contains label {int(labels.max())}, outside [0, {num_classes}).")
    if spec.mean is not None and spec.std is not None:
        mean, std = spec.mean, spec.std
    else:
        mean, std = channel_stats(images)
    if not images.flags.writeable:
        images = images.copy()
    return ArrayDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
        num_classes=num_classes,
        name=spec.name,
        split=split,
        mean=mean,
        std=std,
        classes=classes,
    )


def info(name: str) -> dict[str, Any]:
    """What is known about a dataset: classes count, image shape, mean/std, files, augmentation defaults."""
    spec = get_spec(name)
    return {
        "name": spec.name,
        "aliases": list(spec.aliases),
        "num_classes": spec.num_classes,
        "shape": spec.shape,
        "mean": spec.mean,
        "std": spec.std,
        "sizes": dict(spec.sizes),
        "files": dict(spec.files),
        "folders": list(spec.folders),
        "search_dirs": [str(p) for p in search_dirs(spec)] if spec.locate is not None else [],
        "downloadable": spec.name in RESOURCES,
        "urls": [url for r in RESOURCES.get(spec.name, ()) for url in r.urls[:1]],
        "augment": dict(spec.augment) if spec.augment is not None else None,
        "options": list(spec.options),
        "classes": list(spec.classes) if spec.classes is not None else None,
        "default_eps": spec.default_eps,
    }


# --- locators: given one candidate directory, where the reader should look (or None) ---------


def _locate_idx(torch_folder: str) -> Locator:
    def locate_idx(directory: Path, split: str) -> Path | None:
        for sub in (directory, directory / "raw", directory / torch_folder / "raw"):
            if all(idx.idx_file(sub, stem) for stem in idx.mnist_stems(split)):
                return sub
        return None

    return locate_idx


def _locate_cifar(folder: str, archive: str, files: Callable[[str], list[str]]) -> Locator:
    def locate_cifar(directory: Path, split: str) -> Path | None:
        for base in (directory / folder, directory):
            if all((base / name).is_file() for name in files(split)):
                return base
        return directory / archive if (directory / archive).is_file() else None

    return locate_cifar


def _locate_svhn(directory: Path, split: str) -> Path | None:
    path = directory / svhn.svhn_file(split)
    return path if path.is_file() else None


def _locate_stl10(directory: Path, split: str) -> Path | None:
    for base in (directory / stl10.STL10_FOLDER, directory):
        if all((base / name).is_file() for name in stl10.stl10_files(split)):
            return base
    return None


def _locate_tiny(directory: Path, split: str) -> Path | None:
    needed = "train" if split == "train" else "val/val_annotations.txt"
    for base in (directory / tiny_imagenet.TINY_FOLDER, directory):
        if (base / "wnids.txt").is_file() and (base / needed).exists():
            return base
    return None


def _locate_imagefolder(directory: Path, split: str) -> Path | None:
    names = ("train",) if split == "train" else ("test", "val")
    for name in names:
        if (directory / name).is_dir():
            return directory / name
    if directory.is_dir() and any(p.is_dir() for p in directory.iterdir()):
        return directory
    return None


def _idx_files_in(directory: Path, split: str) -> list[Path]:
    return [path for stem in idx.mnist_stems(split) if (path := idx.idx_file(directory, stem)) is not None]


def _files_in(names: Callable[[str], list[str]]) -> Callable[[Path, str], list[Path]]:
    def files_in(directory: Path, split: str) -> list[Path]:
        return [directory / name for name in names(split)]

    return files_in


# --- readers with the common signature -----------------------------------------------------------


def _read_idx(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*idx.read_mnist(located, split), None)


def _read_cifar10(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*cifar.read_cifar10(located, split), None)


def _read_cifar100(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*cifar.read_cifar100(located, split), None)


def _read_svhn(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*svhn.read_svhn(located), None)


def _read_stl10(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*stl10.read_stl10(located, split), None)


def _read_tiny(located: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return (*tiny_imagenet.read_tiny_imagenet(located, split), tiny_imagenet.tiny_imagenet_classes(located))


def _read_imagefolder(
    located: Path, split: str, resize: Any = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    return (*read_imagefolder(located, resize=resize), imagefolder_classes(located))


def _read_digits(located: None, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_digits(split), None)


def _read_animal(located: None, split: str) -> tuple[np.ndarray, np.ndarray, None]:
    return (*read_animal_mnist(split), None)


def _idx_files(split: str) -> str:
    images, labels = idx.mnist_stems(split)
    return f"{images}.gz and {labels}.gz (or uncompressed)"


_IDX_FILES = {split: _idx_files(split) for split in SPLITS}
_MNIST_AUG = {"padding": 2, "flip": False}
_CIFAR_AUG = {"padding": 4, "flip": True}
_DIGITS = [str(d) for d in range(10)]
_FASHION = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

register_dataset(
    DatasetSpec(
        "mnist",
        10,
        (1, 28, 28),
        (0.1307,),
        (0.3081,),
        _IDX_FILES,
        _read_idx,
        _locate_idx("MNIST"),
        files_in=_idx_files_in,
        classes=tuple(_DIGITS),
        augment=_MNIST_AUG,
        folders=("mnist", "MNIST"),
        sizes={"train": 60000, "test": 10000},
        default_eps=0.1,
    )
)
register_dataset(
    DatasetSpec(
        "fashion-mnist",
        10,
        (1, 28, 28),
        (0.2860,),
        (0.3530,),
        _IDX_FILES,
        _read_idx,
        _locate_idx("FashionMNIST"),
        files_in=_idx_files_in,
        classes=tuple(_FASHION),
        augment=_MNIST_AUG,
        folders=("fashion-mnist", "fashion_mnist", "FashionMNIST"),
        extra_dirs=("/usr/share/datasets/fashion-mnist",),
        sizes={"train": 60000, "test": 10000},
        aliases=("fashion_mnist", "fashionmnist", "fmnist"),
        default_eps=0.1,
    )
)
register_dataset(
    DatasetSpec(
        "cifar10",
        10,
        (3, 32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2471, 0.2435, 0.2616),
        {
            "train": f"{cifar.CIFAR10_FOLDER}/data_batch_1..5 or {cifar.CIFAR10_ARCHIVE}",
            "test": f"{cifar.CIFAR10_FOLDER}/test_batch or {cifar.CIFAR10_ARCHIVE}",
        },
        _read_cifar10,
        _locate_cifar(cifar.CIFAR10_FOLDER, cifar.CIFAR10_ARCHIVE, cifar.cifar10_files),
        files_in=_files_in(cifar.cifar10_files),
        classes=tuple(cifar.CIFAR10_CLASSES),
        augment=_CIFAR_AUG,
        folders=("cifar10", "cifar-10"),
        sizes={"train": 50000, "test": 10000},
        aliases=("cifar-10", "cifar_10"),
    )
)
register_dataset(
    DatasetSpec(
        "cifar100",
        100,
        (3, 32, 32),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        {s: f"{cifar.CIFAR100_FOLDER}/{s} or {cifar.CIFAR100_ARCHIVE}" for s in SPLITS},
        _read_cifar100,
        _locate_cifar(cifar.CIFAR100_FOLDER, cifar.CIFAR100_ARCHIVE, cifar.cifar100_files),
        files_in=_files_in(cifar.cifar100_files),
        classes=tuple(cifar.CIFAR100_CLASSES),
        augment=_CIFAR_AUG,
        folders=("cifar100", "cifar-100"),
        sizes={"train": 50000, "test": 10000},
        aliases=("cifar-100", "cifar_100"),
    )
)
register_dataset(
    DatasetSpec(
        "svhn",
        10,
        (3, 32, 32),
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
        {s: svhn.svhn_file(s) for s in SPLITS},
        _read_svhn,
        _locate_svhn,
        classes=tuple(_DIGITS),
        augment={"padding": 4, "flip": False},
        folders=("svhn", "SVHN"),
        sizes={"train": 73257, "test": 26032},
    )
)
register_dataset(
    DatasetSpec(
        "stl10",
        10,
        (3, 96, 96),
        (0.4467, 0.4398, 0.4066),
        (0.2603, 0.2566, 0.2713),
        {s: f"{stl10.STL10_FOLDER}/{s}_X.bin and {stl10.STL10_FOLDER}/{s}_y.bin" for s in SPLITS},
        _read_stl10,
        _locate_stl10,
        files_in=_files_in(stl10.stl10_files),
        classes=tuple(stl10.STL10_CLASSES),
        augment={"padding": 12, "flip": True},
        folders=("stl10", "stl-10"),
        sizes={"train": 5000, "test": 8000},
        aliases=("stl-10", "stl_10"),
    )
)
register_dataset(
    DatasetSpec(
        "tiny-imagenet",
        200,
        (3, 64, 64),
        (0.4802, 0.4481, 0.3975),
        (0.2770, 0.2691, 0.2821),
        {
            "train": f"{tiny_imagenet.TINY_FOLDER}/wnids.txt and train/<wnid>/images/*.JPEG",
            "test": f"{tiny_imagenet.TINY_FOLDER}/wnids.txt, val/images/*.JPEG and val/val_annotations.txt",
        },
        _read_tiny,
        _locate_tiny,
        augment={"padding": 8, "flip": True},
        folders=("tiny-imagenet", tiny_imagenet.TINY_FOLDER),
        sizes={"train": 100000, "test": 10000},
        aliases=("tinyimagenet", "tiny_imagenet", "tiny-imagenet-200"),
    )
)
register_dataset(
    DatasetSpec(
        "imagefolder",
        None,
        None,
        None,
        None,
        {
            "train": "root/<class>/<image> (or root/train/<class>/<image>)",
            "test": "root/test/<class>/<image> or root/val/<class>/<image> (else root/<class>/<image>)",
        },
        _read_imagefolder,
        None,
        options=("resize",),
        aliases=("image-folder", "image_folder"),
    )
)
register_dataset(
    DatasetSpec(
        "digits",
        10,
        (1, 8, 8),
        (0.3053,),
        (0.3759,),
        {s: "nothing (bundled with scikit-learn)" for s in SPLITS},
        _read_digits,
        classes=tuple(_DIGITS),
        augment={"padding": 1, "flip": False},
        sizes={"train": 1438, "test": 359},
        aliases=("sklearn-digits",),
        default_eps=0.1,
    )
)
register_dataset(
    DatasetSpec(
        "animal-mnist",
        10,
        (1, 28, 28),
        (0.2726,),
        (0.4056,),
        {s: "nothing (pip install animal-mnist)" for s in SPLITS},
        _read_animal,
        classes=tuple(ANIMAL_CLASSES),
        augment={"padding": 2, "flip": True},
        sizes={"train": 8005, "test": 1995},
        aliases=("animal_mnist", "animalmnist"),
        default_eps=0.1,
    )
)
register_dataset(
    DatasetSpec(
        "synthetic",
        None,
        None,
        None,
        None,
        {s: "nothing (random images)" for s in SPLITS},
        None,
        options=("num_classes", "shape", "n", "seed"),
        build=synthetic,
    )
)
