"""`load`: a whole split of a registered dataset into memory, fetched first if asked; and `info`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustdistill.data.dataset import ArrayDataset, channel_stats
from robustdistill.data.download import DownloadFailed, fetch
from robustdistill.data.registry import DatasetSpec, check_split, get_spec
from robustdistill.data.roots import check_data_dir, download_dir, find, missing, search_dirs
from robustdistill.errors import ConfigError, DataError


def load(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = False,
    **options: Any,
) -> ArrayDataset:
    """Load a whole split of a registered dataset into memory.

    Files are searched in `search_dirs` order; with `download=True`, missing files are fetched
    into `cache_dir(name)` (or the explicit `data_dir`) and checked against their published MD5.
    `options` are dataset specific (for example `resize` for `imagefolder`). There is no `val`
    split on disk: see `data.split_validation`.
    """
    spec = get_spec(name)
    split = check_split(split)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ConfigError(f"dataset '{spec.name}' has no option {', '.join(unknown)}; its options: {allowed}.")
    if spec.build is not None:
        return spec.build(split=split, **options)
    located = _locate_or_fetch(spec, split, data_dir, download) if spec.locate is not None else None
    assert spec.read is not None
    try:
        images, labels, classes = spec.read(located, split, **options)
    except MemoryError:
        raise DataError(
            f"not enough memory to read {spec.name} ({split}) from {located}; free memory or use a smaller dataset."
        ) from None
    return _to_dataset(spec, split, images, labels, classes, located)


def _locate_or_fetch(spec: DatasetSpec, split: str, data_dir: str | Path | None, download: bool) -> Path:
    """The located files of the split, downloading the split's resources first when asked and missing."""
    check_data_dir(spec.name, data_dir, download)
    located = find(spec, split, data_dir)
    if located is None and download:
        if not spec.resources:
            raise missing(spec, split, data_dir, "it cannot be downloaded automatically")
        target = download_dir(spec, data_dir)
        try:
            for resource in spec.resources:
                if split in resource.splits:
                    fetch(resource, target)
        except DownloadFailed as exc:
            raise missing(spec, split, data_dir, f"download failed: {exc}") from None
        assert spec.locate is not None
        located = spec.locate(target, split)
    if located is None:
        raise missing(spec, split, data_dir)
    return located


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
        "downloadable": bool(spec.resources),
        "urls": [url for r in spec.resources for url in r.urls[:1]],
        "augment": dict(spec.augment) if spec.augment is not None else None,
        "options": list(spec.options),
        "classes": list(spec.classes) if spec.classes is not None else None,
        "default_eps": spec.default_eps,
    }
