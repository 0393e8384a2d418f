"""benchmarks/method_table.py: a student's weights are kept next to its record and load from there."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from robustdistill import models

_SPEC = importlib.util.spec_from_file_location(
    "method_table", Path(__file__).parents[1] / "benchmarks" / "method_table.py"
)
assert _SPEC is not None and _SPEC.loader is not None
method_table = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(method_table)


def test_kept_weights_load_by_either_file_and_keep_their_hash(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = models.create("lenet-small").eval()
    weights = models.save(model, tmp_path / "run" / "model.safetensors")
    kept = tmp_path / "out" / "weights" / "pgd-at-seed0.safetensors"
    method_table.keep_weights(weights, kept)
    x = torch.rand(4, 1, 28, 28)
    for path in (kept, kept.with_suffix(".json")):
        torch.testing.assert_close(models.load(path).eval()(x), model(x), rtol=0, atol=0)
    assert method_table.weights_sha256(kept) == method_table.weights_sha256(weights)
