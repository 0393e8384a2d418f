"""The dataset registry: each dataset's facts, declared once by `register_dataset` next to its reader.

    register_dataset(
        "cifar10", num_classes=10, shape=(3, 32, 32), mean=(...), std=(...), default_eps=8 / 255,
        augment={"padding": 4, "flip": True}, files={...}, read=read, locate=locate, aliases=("cifar-10",),
    )

An alias resolves to its dataset's entry, so it has that dataset's facts by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robustdistill.data.dataset import ArrayDataset
from robustdistill.data.download import Resource
from robustdistill.errors import ConfigError
from robustdistill.registry import Registry

SPLITS = ("train", "test")

Reader = Callable[..., tuple[np.ndarray, np.ndarray, "list[str] | None"]]
Locator = Callable[[Path, str], "Path | None"]
FilesIn = Callable[[Path, str], list[Path]]


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """What the library knows about one dataset: its shape, statistics, files and reader."""

    name: str
    files: dict[str, str]  # split -> the expected files, in words (for errors and info)
    read: Reader | None = None  # read(located, split, **options) -> (images, labels, classes or None)
    build: Callable[..., ArrayDataset] | None = None  # replaces read/locate entirely (synthetic)
    locate: Locator | None = None  # (candidate dir, split) -> the path `read` takes; None: no files to find
    files_in: FilesIn | None = None  # located folder -> the files it reads (None: the located path itself)
    num_classes: int | None = None  # None: from the classes the reader returns, else the labels
    shape: tuple[int, int, int] | None = None  # None: any shape
    mean: tuple[float, ...] | None = None  # None: computed from the loaded images
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None
    augment: dict[str, Any] | None = None  # the loader's crop/flip defaults; None: choose explicitly
    default_eps: float = 8 / 255  # the L-inf budget of the literature for this dataset
    folders: tuple[str, ...] = ()  # sub-folder names tried under data_dir and $ROBUSTDISTILL_DATA
    extra_dirs: tuple[str, ...] = ()  # known system locations
    needs_data_dir: bool = False  # looked for only in an explicit data_dir (imagefolder)
    resources: tuple[Resource, ...] = ()  # official files `download=True` fetches
    options: tuple[str, ...] = ()  # keyword options of `read` / `build`
    sizes: dict[str, int] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"dataset '{self.name}'"
        if (self.read is None) == (self.build is None):
            raise ValueError(f"{where} needs exactly one of read and build")
        if set(self.files) != set(SPLITS):
            raise ValueError(f"{where}: files must describe the splits {SPLITS}, got {sorted(self.files)}")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"{where}: give both mean and std, or neither (computed from the images)")
        channels = self.shape[0] if self.shape is not None else None
        for stat in (self.mean, self.std):
            if stat is not None and channels is not None and len(stat) != channels:
                raise ValueError(f"{where}: mean and std need {channels} values, one per channel")
        if self.classes is not None and self.num_classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"{where}: {len(self.classes)} class names for {self.num_classes} classes")
        if not self.default_eps > 0:
            raise ValueError(f"{where}: default_eps must be > 0, got {self.default_eps}")
        if self.needs_data_dir and self.locate is None:
            raise ValueError(f"{where}: needs_data_dir needs a locate function")


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(name: str, **facts: Any) -> DatasetSpec:
    """Declare a dataset: its `DatasetSpec` fields as keyword arguments; registered under `name` and `aliases`."""
    spec = DatasetSpec(name=name, **facts)
    DATASETS.register(name, aliases=spec.aliases)(lambda: spec)
    return spec


def get_spec(name: str) -> DatasetSpec:
    """The spec of a dataset name or alias (ConfigError with a suggestion if unknown)."""
    return DATASETS.get(name)()


def available() -> list[str]:
    """Canonical names of every registered dataset, sorted."""
    return DATASETS.names()


def named_files(names: Callable[[str], Sequence[str]]) -> FilesIn:
    """A `files_in` for datasets whose split is a fixed list of file names inside the located folder."""

    def files_in(directory: Path, split: str) -> list[Path]:
        return [directory / name for name in names(split)]

    return files_in


def check_split(split: str) -> str:
    """`split` lower-cased when it is `train` or `test`; ConfigError otherwise (the validation split is carved)."""
    split = split.strip().lower()
    if split in ("val", "valid", "validation"):
        raise ConfigError(
            f"'{split}' is not a file split: the validation split is carved from the training split; "
            "use data.split_validation(data.load(name, 'train'), size) (the val_size key in a run)."
        )
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; use 'train' or 'test'.")
    return split
