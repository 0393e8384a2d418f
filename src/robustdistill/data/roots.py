"""Root discovery: where the files of a registered dataset are looked for, found, and downloaded to."""

from __future__ import annotations

import os
from pathlib import Path

from robustdistill.data.registry import DatasetSpec, check_split, get_spec
from robustdistill.errors import DataError

ENV_VAR = "ROBUSTDISTILL_DATA"


def cache_dir(name: str) -> Path:
    """`~/.cache/robustdistill/<name>`: where `download=True` puts files."""
    return Path.home() / ".cache" / "robustdistill" / name


def _bases(data_dir: str | Path | None) -> list[str]:
    """The explicit data_dir, else each $ROBUSTDISTILL_DATA entry (os.pathsep-separated)."""
    if data_dir is not None:
        return [str(Path(data_dir).expanduser())]
    return [part for part in os.environ.get(ENV_VAR, "").split(os.pathsep) if part]


def search_dirs(spec: DatasetSpec, data_dir: str | Path | None = None) -> list[Path]:
    """The directories tried, in order.

    An explicit `data_dir` is the only place looked: the directory itself and its sub-folders named
    after the dataset (`spec.folders`). Without one: each $ROBUSTDISTILL_DATA entry (with the same
    sub-folders), known system paths, then the cache; nothing for a dataset that `needs_data_dir`.
    """
    if spec.needs_data_dir and data_dir is None:
        return []
    dirs: list[Path] = []
    for base in map(Path, _bases(data_dir)):
        dirs.append(base)
        dirs.extend(base / folder for folder in spec.folders)
    if data_dir is None:
        dirs.extend(Path(d) for d in spec.extra_dirs)
        dirs.append(cache_dir(spec.name))
    return list(dict.fromkeys(dirs))


def download_dir(spec: DatasetSpec, data_dir: str | Path | None = None) -> Path:
    """Where `download=True` puts files: the explicit data_dir, else the cache."""
    return Path(data_dir).expanduser() if data_dir is not None else cache_dir(spec.name)


def find(spec: DatasetSpec, split: str, data_dir: str | Path | None = None) -> Path | None:
    """The first candidate of `search_dirs` in which `spec.locate` finds the split, or None."""
    if spec.locate is None:
        return None
    for directory in search_dirs(spec, data_dir):
        if directory.is_dir():
            found = spec.locate(directory, split)
            if found is not None:
                return found
    return None


def locate(name: str, split: str = "train", data_dir: str | Path | None = None) -> Path | None:
    """Where the files of `name`/`split` are (the path its reader takes), or None if not found."""
    return find(get_spec(name), check_split(split), data_dir)


def source_files(name: str, split: str = "train", data_dir: str | Path | None = None) -> list[str]:
    """The resolved paths of the files `load(name, split, data_dir)` reads ([] for bundled data)."""
    spec = get_spec(name)
    located = find(spec, check_split(split), data_dir)
    if located is None:
        return []
    files = spec.files_in(located, split) if spec.files_in is not None and located.is_dir() else [located]
    return [str(path.resolve()) for path in files]


def missing(spec: DatasetSpec, split: str, data_dir: str | Path | None, reason: str = "") -> DataError:
    """The one-line error of a split that was not found: expected files, places searched, remedy."""
    searched = []
    for base in dict.fromkeys(_bases(data_dir)):
        searched.append(base)
        if spec.folders:
            searched.append(f"{base}/{{{','.join(spec.folders)}}}")
    remedy = "add --download" if spec.resources else "download it by hand"
    because = f" ({reason})" if reason else ""
    if data_dir is not None:
        elsewhere = "" if spec.needs_data_dir else ", or drop --data-dir"
        return DataError(
            f"{spec.name} ({split}) not found in --data-dir{because}: expected {spec.files[split]}; "
            f"searched only {', '.join(searched)} (an explicit --data-dir is the only place looked); "
            f"put the files there{'' if spec.needs_data_dir else ', ' + remedy}{elsewhere}."
        )
    if spec.needs_data_dir:
        return DataError(f"{spec.name} needs a data directory: expected {spec.files[split]}; pass --data-dir DIR.")
    searched += [*spec.extra_dirs, str(cache_dir(spec.name))]
    return DataError(
        f"{spec.name} ({split}) not found{because}: expected {spec.files[split]}; "
        f"searched {', '.join(searched)}; pass --data-dir DIR, set {ENV_VAR}=DIR, or {remedy}."
    )


def check_data_dir(name: str, data_dir: str | Path | None, download: bool) -> None:
    """A given data_dir must be a directory (or not exist yet when downloading into it)."""
    if data_dir is None:
        return
    path = Path(data_dir).expanduser()
    if path.is_dir() or (download and not path.exists()):
        return
    what = "is not a directory" if path.exists() else "does not exist"
    raise DataError(f"--data-dir '{data_dir}' {what}; pass the folder that holds the {name} files.")
