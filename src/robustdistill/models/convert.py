"""Bring state dicts written by other code bases into the layout of `robustdistill.models`.

Mapping applied by `convert_state_dict`, in order:

1. Containers are unwrapped: `{"state_dict": ...}`, `{"model_state_dict": ...}`, `{"model": ...}`,
   `{"net": ...}` (repeatedly); entries that are not tensors (epoch counters, optimiser info) are dropped.
2. Wrapper prefixes are stripped from every key: `module.` (DataParallel / DistributedDataParallel)
   and `_orig_mod.` (torch.compile), in any combination. With a `target_model`, a leading component
   shared by all keys that the target does not have (for example `model.` or `student.`) is stripped too.
3. Architecture maps:
   - TRADES / MART WRN-34-10 (yaodongyu/TRADES, YisenWang/MART): names are already ours
     (`conv1`, `block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}`, `bn1`, `fc`); the unused
     `sub_block1.*` group of some versions is dropped.
   - kuangliu/pytorch-cifar style ResNet / PreAct ResNet / MobileNetV2 (ARD, RSLAD, Rice et al.):
     the head `linear.*` becomes `fc.*`; everything else is unchanged. kuangliu's PreAct ResNet has no
     final BatchNorm: load it into `create("preact-resnet-18", final_bn=False)` (a target with the
     final `bn` refuses it with that hint, rather than a list of missing keys).
   - TRADES SmallCNN: unchanged.
   - Normalisation buffers named `mu` / `sigma` become `mean` / `std`, reshaped to `(1, C, 1, 1)`.
   - RobustBench: its standard WideResNet (`model_zoo/architectures/wide_resnet.py`) is the TRADES
     layout above (`sub_block1.*` dropped, `mu` / `sigma` renamed); its DeepMind `DMWideResNet` and
     `DMPreActResNet` keep their names (`dm-wrn-D-K`, `dm-preact-resnet-18/34` are built with them),
     their `mean` / `std` buffers of shape `(C, 1, 1)` are reshaped.
4. With a `target_model`: absent `mean` / `std` are set to the identity (0 / 1): TRADES, MART, ARD and
   RSLAD checkpoints take `[0, 1]` inputs without normalisation, so the target's own statistics must
   not be applied; a target whose original code normalises with constants of its own
   (`own_statistics`, the DeepMind models) keeps them instead. Absent BatchNorm `num_batches_tracked`
   counters are filled with 0, and an absent bias of the final linear layer (RobustBench's
   `bias_last=False`) with zeros, which leaves the logits unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from robustdistill.errors import CheckpointError

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
DROPPED_PREFIXES = ("sub_block1.",)
RENAMED_PREFIXES = {"linear.": "fc."}
RENAMED_KEYS = {"mu": "mean", "sigma": "std"}


def unwrap(obj: Any) -> Mapping[str, Any]:
    """Descend through `{"state_dict": ...}`-style containers to the mapping holding the tensors."""
    for _ in range(8):
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in CONTAINER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}.")
    return obj


def strip_wrappers(key: str) -> str:
    """Remove leading `module.` / `_orig_mod.` prefixes (in any order and number)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                changed = True
    return key


def _strip_shared_prefix(sd: dict[str, Tensor], target: nn.Module) -> dict[str, Tensor]:
    own = target.state_dict()
    if not sd or set(sd) & set(own):
        return sd
    heads = {key.split(".", 1)[0] for key in sd}
    if len(heads) != 1 or any("." not in key for key in sd):
        return sd
    head = heads.pop()
    stripped = {key[len(head) + 1 :]: value for key, value in sd.items()}
    return stripped if set(stripped) & set(own) else sd


def _head_key(model: nn.Module) -> str:
    head_key = getattr(model, "head_key", None)
    return head_key() if callable(head_key) else "fc"


def _check_final_bn(incoming: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> None:
    """A PreAct ResNet checkpoint without the final BN (kuangliu layout) needs the model built without it."""
    preact = "bn.weight" in own and "layer4.0.bn1.weight" in own and "layer4.0.bn1.weight" in incoming
    if preact and not any(key.startswith("bn.") for key in incoming):
        raise CheckpointError(
            "the checkpoint is a PreAct ResNet without the final BatchNorm 'bn' (kuangliu/pytorch-cifar "
            "layout, as in ARD and RSLAD); create the model with final_bn=False to load it."
        )


def convert_state_dict(sd: Mapping[str, Any], target_model: nn.Module | None = None) -> dict[str, Tensor]:
    """A foreign state dict (or checkpoint container) in the key layout of our models; see the module doc."""
    flat = unwrap(sd)
    tensors = {strip_wrappers(str(k)): v for k, v in flat.items() if isinstance(v, Tensor)}
    if not tensors:
        keys = ", ".join(list(map(str, flat))[:5])
        raise CheckpointError(f"no tensors found in the checkpoint (top-level keys: {keys or 'none'}).")
    if target_model is not None:
        tensors = _strip_shared_prefix(tensors, target_model)
        own = target_model.state_dict()
    else:
        own = {}
    out: dict[str, Tensor] = {}
    for key, value in tensors.items():
        if key.startswith(DROPPED_PREFIXES) and key not in own:
            continue
        for old, new in RENAMED_PREFIXES.items():
            if key.startswith(old) and key not in own:
                key = new + key[len(old) :]
        if key in RENAMED_KEYS and key not in own:
            key = RENAMED_KEYS[key]
        if key in ("mean", "std") and value.dim() != 4:
            value = value.reshape(1, -1, 1, 1)
        out[key] = value
    if target_model is not None:
        keep_statistics = bool(getattr(target_model, "own_statistics", False))
        _check_final_bn(out, own)
        for name in ("mean", "std"):
            if name in own and name not in out:
                default = own[name] if keep_statistics else torch.full_like(own[name], 0.0 if name == "mean" else 1.0)
                out[name] = default.detach().to("cpu").clone()
        head_bias = _head_key(target_model) + ".bias"
        for key, value in own.items():
            absent_bias = key == head_bias and key[: -len("bias")] + "weight" in out
            if key not in out and (key.endswith("num_batches_tracked") or absent_bias):
                out[key] = torch.zeros_like(value, device="cpu")
    return out
