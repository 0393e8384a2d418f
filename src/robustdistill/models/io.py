"""Saving and loading models without unpickling code.

`save(model, path)` writes two files, each atomically (temporary file in the same directory,
flush, fsync, `os.replace`):

- `path` (`.safetensors`): every tensor of the state dict, buffers included, contiguous, on CPU;
- `path.with_suffix(".json")`: the model spec (`arch`, `num_classes`, `in_channels`, `kwargs`,
  `mean`, `std`) plus `format_version`, the weights file name and its SHA-256.

`load(path)` rebuilds the model from these two files alone. Plain PyTorch state dicts
(`.pt` / `.pth`) are read by `load_state_dict_file` with `torch.load(weights_only=True)` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from robustdistill.errors import CheckpointError, ConfigError, one_line
from robustdistill.models.base import Classifier
from robustdistill.models.convert import convert_state_dict
from robustdistill.models.registry import create
from robustdistill.utils import atomic_write_bytes

FORMAT_VERSION = 1
SPEC_FIELDS = ("arch", "num_classes", "in_channels", "kwargs", "mean", "std")
_SHOWN = 3


def _spec_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save(model: Classifier, path: str | os.PathLike[str]) -> Path:
    """Write the weights to `path` (safetensors) and the spec to `path.with_suffix('.json')`."""
    path = Path(path)
    spec_path = _spec_path(path)
    if spec_path == path:
        raise ConfigError(f"cannot save weights to {path}: the spec goes to a .json file next to it; use .safetensors.")
    spec = model.spec
    tensors: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        tensor = value.detach().to("cpu").contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen:  # safetensors refuses shared storage (tied weights): store a copy
            tensor = tensor.clone()
        seen.add(pointer)
        tensors[key] = tensor
    data = st_save(tensors, metadata={"format_version": str(FORMAT_VERSION), "arch": spec["arch"]})
    record = {
        "format_version": FORMAT_VERSION,
        **spec,
        "weights": path.name,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write_bytes(path, data)
    atomic_write_bytes(spec_path, (json.dumps(record, indent=2) + "\n").encode())
    return path


def _read_bytes(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist.")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {what} {path}: {one_line(error, 160)}.") from None
    if not data:
        raise CheckpointError(f"{what} {path} is empty; it was probably not written completely.")
    return data


def _read_spec(spec_path: Path, weights_hint: Path | None) -> dict[str, Any]:
    if not spec_path.is_file():
        extra = ""
        if weights_hint is not None and weights_hint.suffix != ".safetensors":
            extra = " For a plain state dict, create the model and call models.load_weights(model, path)."
        raise CheckpointError(
            f"model spec {spec_path} is missing; models.load needs the .json written next to the weights "
            f"by models.save.{extra}"
        )
    try:
        record = json.loads(_read_bytes(spec_path, "model spec"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"model spec {spec_path} is not valid JSON ({one_line(error, 160)}).") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"model spec {spec_path} is not a JSON object.")
    version = record.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"model spec {spec_path} has no valid format_version; it was not written by models.save.")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"model spec {spec_path} has format_version {version}, newer than {FORMAT_VERSION}; upgrade robustdistill."
        )
    missing = [field for field in SPEC_FIELDS if field not in record]
    if missing:
        raise CheckpointError(f"model spec {spec_path} lacks {', '.join(missing)}.")
    return record


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Classifier:
    """Rebuild a model saved by `save` from its `.safetensors` and `.json` files (either path works)."""
    path = Path(path)
    if path.suffix == ".json":
        record = _read_spec(path, None)
        weights = path.parent / _weights_name(record.get("weights", path.with_suffix(".safetensors").name), path)
    else:
        weights = path
        if not weights.is_file():
            raise CheckpointError(f"weights file {weights} does not exist.")
        record = _read_spec(_spec_path(path), path)
    data = _read_bytes(weights, "weights file")
    digest = record.get("sha256")
    if digest is not None and hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(
            f"weights file {weights} is corrupt or was changed after saving (its SHA-256 does not match the spec)."
        )
    tensors = _parse_safetensors(data, weights)
    model = _rebuild(record, weights, sum(t.numel() for t in tensors.values()))
    load_into(model, tensors, strict=True)
    return model.to(map_location)


def _weights_name(name: object, spec_path: Path) -> str:
    """The spec's `weights` entry: a bare file name in the spec's own folder, nothing else."""
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise CheckpointError(
            f"model spec {spec_path} names its weights {name!r}; it must be a bare file name in the same folder."
        )
    return name


def _rebuild(record: dict[str, Any], weights: Path, stored: int) -> Classifier:
    """The model a spec describes, sized on the meta device first: a spec asking for more values
    than the weights file holds (a tampered or foreign spec) is refused before anything is allocated."""
    where = f"the spec of {weights}"

    def build() -> Classifier:
        return create(
            record["arch"],
            num_classes=record["num_classes"],
            in_channels=record["in_channels"],
            mean=record["mean"],
            std=record["std"],
            **record["kwargs"],
        )

    try:
        with torch.device("meta"):
            wanted = sum(t.numel() for t in build().state_dict().values())
    except (ConfigError, TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as error:
        raise CheckpointError(f"cannot rebuild the model described by {where}: {one_line(error, 160)}") from None
    if wanted != stored:
        raise CheckpointError(
            f"{where} describes a model of {wanted} values but the weights file holds {stored}; "
            "the spec does not belong to these weights."
        )
    try:
        return build()
    except (ConfigError, TypeError, ValueError, RuntimeError, MemoryError) as error:
        raise CheckpointError(f"cannot rebuild the model described by {where}: {one_line(error, 160)}") from None


def _parse_safetensors(data: bytes, path: Path) -> dict[str, Tensor]:
    try:
        return st_load(data)
    except Exception as error:  # safetensors raises its own SafetensorError, or ValueError / OSError
        raise CheckpointError(f"weights file {path} is truncated or corrupt ({one_line(error, 160)}).") from None


def _unpickling_reason(error: BaseException) -> str:
    """The informative paragraph of torch's long weights-only refusal message."""
    for paragraph in str(error).split("\n\n"):
        text = one_line(paragraph.split("WeightsUnpickler error:")[-1])
        if text and not text.startswith(("Weights only load failed", "Check the documentation")):
            return text if len(text) <= 120 else text[:117] + "..."
    return one_line(error, 120)


def _conversion_hint(path: Path) -> str:
    out = path.with_suffix(".safetensors")
    command = (
        "import torch; from safetensors.torch import save_file; "
        f"sd = torch.load('{path}', map_location='cpu', weights_only=False); "
        "sd = sd.get('state_dict', sd); "
        f"save_file({{k: v.contiguous() for k, v in sd.items()}}, '{out}')"
    )
    return f'if you trust this file, convert it once with: python -c "{command}" and load the .safetensors file.'


def load_state_dict_file(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a `.safetensors` or plain `.pt` / `.pth` state dict; never runs pickled code.

    Returns the mapping as stored (it may be a container such as `{"state_dict": ...}`);
    pass it through `convert_state_dict` for foreign checkpoints.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors = _parse_safetensors(_read_bytes(path, "weights file"), path)
        return {key: value.to(map_location) for key, value in tensors.items()}
    _read_bytes(path, "checkpoint")  # existence and emptiness, with a clear message
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded with weights_only=True: it needs arbitrary pickle code "
            f"or is corrupt ({_unpickling_reason(error)}); " + _conversion_hint(path)
        ) from None
    except Exception as error:  # zip / pickle framing errors, EOF, bad magic number
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({one_line(error, 160)}).") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def load_into(model: Classifier, state_dict: Mapping[str, Any], strict: bool = True) -> tuple[list[str], list[str]]:
    """Copy `state_dict` into `model`; returns `(missing, unexpected)` keys (both empty when strict).

    Raises CheckpointError with one line naming a few offending keys; a different number of
    classes is reported as such.
    """
    own = model.state_dict()
    bad = [str(k) for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint entries are not tensors: {_listing(bad)}.")
    incoming = {str(k): v for k, v in state_dict.items()}
    head = f"{model.head_key()}.weight"
    if head in incoming and incoming[head].dim() == 2 and incoming[head].shape[0] != own[head].shape[0]:
        raise CheckpointError(
            f"checkpoint has {incoming[head].shape[0]} classes, model has {own[head].shape[0]}; "
            f"create the model with num_classes={incoming[head].shape[0]} or use a matching checkpoint."
        )
    if "mean" in incoming and incoming["mean"].dim() == 4 and incoming["mean"].shape != own["mean"].shape:
        raise CheckpointError(
            f"checkpoint has {incoming['mean'].shape[1]} input channels, model has {own['mean'].shape[1]}."
        )
    mismatched = [
        f"{key} {tuple(incoming[key].shape)} vs model {tuple(value.shape)}"
        for key, value in own.items()
        if key in incoming and incoming[key].shape != value.shape
    ]
    if mismatched:
        raise CheckpointError(f"checkpoint does not fit the model, shapes differ: {_listing(mismatched)}.")
    _check_values(own, incoming)
    missing = [key for key in own if key not in incoming]
    unexpected = [key for key in incoming if key not in own]
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected {_listing(unexpected)}")
        raise CheckpointError(
            f"checkpoint keys do not match the model ({'; '.join(parts)}); a checkpoint from other code "
            f"may need models.convert_state_dict, or a different architecture."
        )
    with torch.no_grad():
        model.load_state_dict(incoming, strict=strict)
    return missing, unexpected


def _check_values(own: Mapping[str, Tensor], incoming: Mapping[str, Tensor]) -> None:
    """Refuse integer tensors where the model holds floats, NaN/Inf, and a normalisation `std` <= 0."""
    for key, value in incoming.items():
        target = own.get(key)
        if target is None or not target.is_floating_point():
            continue
        if not (value.is_floating_point() or value.is_complex()):
            raise CheckpointError(f"checkpoint tensor '{key}' holds {value.dtype} values where the model has floats.")
        if value.numel() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"checkpoint tensor '{key}' holds NaN or infinite values; the weights are broken.")
        if key == "std" and value.numel() and bool((value <= 0).any()):
            raise CheckpointError(
                f"checkpoint tensor 'std' (input normalisation) holds a value <= 0: {value.flatten().tolist()}."
            )


def load_weights(
    model: Classifier,
    path: str | os.PathLike[str],
    strict: bool = True,
    map_location: str | torch.device = "cpu",
) -> Classifier:
    """Load a (possibly foreign) weights file into `model`: read safely, convert, then `load_into`."""
    raw = load_state_dict_file(path, map_location=map_location)
    try:
        state_dict = convert_state_dict(raw, target_model=model)
        load_into(model, state_dict, strict=strict)
    except CheckpointError as error:
        raise CheckpointError(f"{Path(path)}: {error}") from None
    return model
