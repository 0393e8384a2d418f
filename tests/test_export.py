"""Exported students (TorchScript, torch.export, ONNX) give the logits of the model they came from."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from robustdistill import models
from robustdistill.errors import ConfigError


@pytest.fixture(scope="module")
def student() -> models.Classifier:
    torch.manual_seed(0)
    return models.create("smallcnn", num_classes=10, in_channels=1, width=0.25, hidden=16, mean=[0.3], std=[0.4])


def _images(batch: int) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("fmt", ["torchscript", "torch-export"])
def test_export_round_trip_gives_identical_logits(student, tmp_path, fmt):
    student.train()
    path = models.export(student, tmp_path / f"student.{fmt}", input_shape=(1, 28, 28), format=fmt)
    assert student.training  # the caller's mode is kept
    loaded = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    student.eval()
    for batch in (1, 5):  # not the traced batch of 2: the batch dimension stays free
        x = _images(batch)
        with torch.no_grad():
            assert torch.equal(loaded(x), student(x))


def test_export_rejects_bad_arguments(student, tmp_path):
    with pytest.raises(ConfigError, match="unknown export format 'tflite'"):
        models.export(student, tmp_path / "m", input_shape=(1, 28, 28), format="tflite")
    with pytest.raises(ConfigError, match="takes 1 input channels"):
        models.export(student, tmp_path / "m", input_shape=(3, 28, 28))
    with pytest.raises(ConfigError, match="channels, height, width"):
        models.export(student, tmp_path / "m", input_shape=(28, 28))


_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxscript") is not None


@pytest.mark.skipif(not _ONNX, reason="the optional extra 'onnx' (onnx, onnxscript) is not installed")
def test_onnx_export_runs_in_the_onnx_reference_evaluator(student, tmp_path):
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    path = models.export(student, tmp_path / "student.onnx", input_shape=(1, 28, 28), format="onnx")
    x = _images(3)
    (logits,) = ReferenceEvaluator(str(path)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        expected = student.eval()(x).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
