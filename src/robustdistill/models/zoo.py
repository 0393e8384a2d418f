"""The model zoo: robust teachers shipped inside the package, loadable by name.

Each entry is a folder `robustdistill/zoo/<name>/` holding what a run directory holds for a finished
model — `model.safetensors` + `model.json` (its SHA-256 inside), the training run's `config.yaml` —
plus `record.json`: how it was made (command, commit, seconds) and its evaluation records. Wherever
a teacher or checkpoint path is accepted, `zoo:<name>` names an entry:

    robustdistill distill --teacher zoo:fashion-mnist-pgd-at --model lenet-small --method rslad
    teacher = rd.models.zoo.load("fashion-mnist-pgd-at")
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from robustdistill.errors import CheckpointError, ConfigError
from robustdistill.models.base import Classifier

PREFIX = "zoo:"
ROOT = Path(__file__).resolve().parent.parent / "zoo"
WEIGHTS = "model.safetensors"
RECORD = "record.json"


def names() -> list[str]:
    """The names of the shipped entries, sorted."""
    if not ROOT.is_dir():
        return []
    return sorted(p.name for p in ROOT.iterdir() if (p / WEIGHTS).is_file())


def entry_dir(name: str) -> Path:
    """The folder of entry `name` (a ConfigError with a suggestion when there is none)."""
    key = name.strip().lower()
    known = names()
    if key not in known:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(known) or "none"
        raise ConfigError(f"no zoo entry '{name}'.{hint} Shipped entries: {listed} (see `robustdistill zoo`).")
    return ROOT / key


def resolve(location: str | Path) -> Path:
    """`zoo:<name>` -> the entry's folder; any other path unchanged."""
    text = str(location)
    if text.startswith(PREFIX):
        return entry_dir(text[len(PREFIX) :])
    return Path(location)


def record(name: str) -> dict[str, Any]:
    """The entry's `record.json`: how it was trained and its evaluation records."""
    path = entry_dir(name) / RECORD
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"zoo record {path} is unreadable ({error}); reinstall robustdistill.") from None


def for_dataset(dataset: str) -> str | None:
    """The first entry trained on `dataset` (a canonical dataset name), or None."""
    for name in names():
        if record(name).get("dataset") == dataset:
            return name
    return None


def load(name: str) -> Classifier:
    """The entry's model, weights checked against the SHA-256 in its spec, in eval mode."""
    from robustdistill.models.io import load as load_file

    model = load_file(entry_dir(name) / WEIGHTS)
    return model.eval()
