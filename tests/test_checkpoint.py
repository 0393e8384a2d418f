"""Checkpoints: atomic, hashed, verified; damage is detected and resume falls back."""

import os
import pickle

import pytest
import torch

from robustdistill.errors import CheckpointError
from robustdistill.train.checkpoint import (
    checkpoint_path,
    latest_valid_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)


def _state(value: float) -> dict:
    return {"weights": torch.full((3, 3), value), "step": int(value), "rng": torch.get_rng_state()}


def test_round_trip(tmp_path):
    path = save_checkpoint(_state(2.0), tmp_path / "a.ckpt")
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["weights"], torch.full((3, 3), 2.0))
    assert loaded["step"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_checkpoint_is_refused(tmp_path, damage):
    path = save_checkpoint(_state(1.0), tmp_path / "a.ckpt")
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[-20] ^= 0xFF
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_resume_falls_back_to_previous_good_checkpoint(tmp_path):
    save_checkpoint(_state(1.0), checkpoint_path(tmp_path, 10))
    newest = save_checkpoint(_state(2.0), checkpoint_path(tmp_path, 20))
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.warns(UserWarning, match="falling back"):
        found = latest_valid_checkpoint(tmp_path)
    assert found is not None
    path, state = found
    assert path == checkpoint_path(tmp_path, 10)
    assert state["step"] == 1


def test_prune_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(_state(float(step)), checkpoint_path(tmp_path, step))
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_path(tmp_path, s).name for s in (3, 4)]


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_payload_is_never_executed(tmp_path):
    """A checkpoint whose unpickling would create a file is refused; the file never appears."""
    target = tmp_path / "pwned.txt"
    payload = pickle.dumps({"weights": _Payload(str(target))})
    import hashlib

    from robustdistill.train.checkpoint import FORMAT_VERSION, MAGIC

    path = tmp_path / "evil.ckpt"
    path.write_bytes(MAGIC + bytes([FORMAT_VERSION]) + hashlib.sha256(payload).hexdigest().encode() + payload)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not target.exists()
    assert not os.path.exists(target)
