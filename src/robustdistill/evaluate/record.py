"""Result records (one JSON object per result, in the style of RobustBench) and their table."""

from __future__ import annotations

import contextlib
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

VECTOR_EXTENSIONS = ("amx_tile", "avx512f", "avx2")  # widest first: what sets a CPU's convolution speed


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The processor's model name and widest vector extension from Linux's `/proc/cpuinfo`, e.g.
    "Intel(R) Xeon(R) Processor (amx_tile)"; else `platform.processor()`, else "cpu".

    Training seconds compare only on one kind of processor: two machines of this project ran the
    same training epoch 3x apart (an AVX-512/AMX Xeon against an AVX2 EPYC), virtual machines often
    report a generic model name, and `platform.processor()` is empty on Linux.
    """
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or "cpu"
    flags = set(fields.get("flags", "").split())
    widest = next((ext for ext in VECTOR_EXTENSIONS if ext in flags), None)
    return f"{name} ({widest})" if widest else name


def environment() -> dict[str, str]:
    """Software and hardware the result was measured with."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()
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
