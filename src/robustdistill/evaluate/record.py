"""Result records (one JSON object per result, in the style of RobustBench) and their table."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import robustdistill
from robustdistill.errors import ConfigError
from robustdistill.evaluate.table import text_grid
from robustdistill.utils import atomic_write_bytes


def environment() -> dict[str, str]:
    """Software and hardware the result was measured with."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
    return {
        "robustdistill": robustdistill.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": device,
    }


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write one record as indented JSON (atomically)."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode())
    return path


def is_result_record(path: Path) -> bool:
    """True when `path` holds a result record of ours (a JSON object with `accuracy` and `n_examples`)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and "accuracy" in record and "n_examples" in record


def _kind(path: Path) -> str | None:
    """What an existing file that must not be replaced is, in words (None for a result record)."""
    if is_result_record(path):
        return None
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if path.suffix in (".safetensors", ".ckpt", ".pt", ".pth") or magic == b"RDCKPT":
        return "weights or a checkpoint"
    if path.suffix in (".yaml", ".yml"):
        return "a configuration file"
    try:
        loaded = json.loads(path.read_text())
        if isinstance(loaded, dict) and "arch" in loaded and "format_version" in loaded:
            return "a model spec"
    except (UnicodeDecodeError, ValueError):
        pass
    return "a file that is not a robustdistill result record"


def check_record_path(path: Path, inputs: list[Path], *, overwrite: bool, flag: str = "--json") -> None:
    """Refuse a result path that is an input of this command (always) or any existing file that is
    not a result record of ours (unless `overwrite`)."""
    target = path.resolve()
    if target in {p.resolve() for p in inputs}:
        raise ConfigError(f"{flag} '{path}' is an input of this command; choose another path for the result")
    if target.is_dir():
        raise ConfigError(f"{flag} '{path}' is a directory; give a file name such as {path / 'results.json'}")
    if not target.is_file() or overwrite:
        return
    kind = _kind(target)
    if kind is not None:
        raise ConfigError(f"{flag} '{path}' already exists and is {kind}; choose another path or pass --overwrite")


def print_table(records: dict[str, dict[str, Any]], *, title: str = "robust accuracy (%)") -> None:
    """A terminal table: one row per model, one column per attack (accuracy % ± standard error)."""
    titles, texts = text_grid(records, sep="\n")
    table = Table(title=title, caption="accuracy (%) ± standard error; n: images per column")
    table.add_column("model")
    for name in titles:
        table.add_column(name, justify="right")
    for label, row in zip(records, texts, strict=True):
        table.add_row(label, *row)
    Console().print(table)


def markdown_table(records: dict[str, dict[str, Any]]) -> str:
    """A markdown table like `print_table`; **bold** marks a column's best non-teacher value beyond noise."""
    titles, texts = text_grid(records, contenders=[label for label in records if label != "teacher"])
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---:|" * len(titles)]
    lines += [f"| {label} | " + " | ".join(row) + " |" for label, row in zip(records, texts, strict=True)]
    return "\n".join(lines) + "\n"
