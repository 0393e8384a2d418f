"""Export a trained model for deployment without robustdistill: TorchScript, `torch.export`, ONNX.

    >>> from robustdistill import models
    >>> student = models.load("runs/demo/rslad/model.safetensors")
    >>> models.export(student, "student.pt", input_shape=(1, 28, 28))                 # TorchScript
    >>> models.export(student, "student.pt2", input_shape=(1, 28, 28), format="torch-export")
    >>> models.export(student, "student.onnx", input_shape=(1, 28, 28), format="onnx")  # needs the onnx extra

The exported graph is the model's `forward` in eval mode: images in [0, 1], `(B, C, H, W)` float32,
normalisation included, logits out; the batch dimension stays dynamic. Load the results with
`torch.jit.load(path)`, `torch.export.load(path).module()` or any ONNX runtime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from robustdistill.errors import ConfigError

__all__ = ["FORMATS", "export"]

FORMATS = ("torchscript", "torch-export", "onnx")


def _example(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input_shape must be (channels, height, width), got {tuple(input_shape)}")
    channels = getattr(model, "in_channels", shape[0])
    if shape[0] != channels:
        raise ConfigError(f"the model takes {channels} input channels, input_shape has {shape[0]}")
    device = next(model.parameters()).device
    return torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)).to(device)


def export(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    input_shape: Sequence[int],
    format: str = "torchscript",
) -> Path:
    """Write `model` (in eval mode; its mode is restored) to `path` as `format`; returns the path.

    Args:
        model: a classifier mapping images in [0, 1] to logits.
        path: the file to write (parent directories are created).
        input_shape: `(channels, height, width)` of one image, e.g. `(1, 28, 28)` or `(3, 32, 32)`.
        format: "torchscript" (`torch.jit.trace`), "torch-export" (`torch.export.export` + `save`) or
            "onnx" (`torch.onnx.export` with the dynamo exporter; needs the `onnx` extra).

    Raises:
        ConfigError: unknown format, wrong input shape, or ONNX requested without `onnx` / `onnxscript`.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format '{format}'; choose from {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    example = _example(model, input_shape)
    batch = torch.export.Dim("batch", min=1)
    try:
        with torch.no_grad():
            if format == "torchscript":
                torch.jit.save(torch.jit.trace(model, example), str(path))
            elif format == "torch-export":
                program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
                torch.export.save(program, str(path))
            else:
                try:
                    import onnx  # noqa: F401
                    import onnxscript  # noqa: F401
                except ImportError as error:
                    raise ConfigError(
                        "ONNX export needs the packages onnx and onnxscript: pip install 'robustdistill[onnx]'"
                    ) from error
                torch.onnx.export(
                    model,
                    (example,),
                    str(path),
                    input_names=["images"],
                    output_names=["logits"],
                    dynamic_shapes=({0: batch},),
                    dynamo=True,
                )
    finally:
        model.train(was_training)
    return path
