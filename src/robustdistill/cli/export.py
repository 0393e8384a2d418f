"""`export`: a trained model for deployment (TorchScript, torch.export, ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robustdistill.cli.common import _existing, console


def export(
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="Run directory or weights file of the model.")],
    out: Annotated[Path, typer.Option("--out", help="File to write, e.g. student.pt, student.pt2, student.onnx.")],
    export_format: Annotated[
        str,
        typer.Option("--format", help="torchscript (torch.jit), torch-export (torch.export) or onnx (needs [onnx])."),
    ] = "torchscript",
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape",
            help="One image as CxHxW, e.g. 3x32x32 (default: the shape of the dataset the run was trained on).",
        ),
    ] = None,
) -> None:
    """Export a model for deployment (images in [0, 1] in, logits out, any batch size); takes seconds."""
    from robustdistill import data as data_lib
    from robustdistill import models, runs
    from robustdistill.errors import ConfigError

    model, weights = runs.load_model(str(_existing(checkpoint, "--checkpoint")))
    if input_shape is None:
        name = runs.trained_on(weights)
        shape = data_lib.info(name)["shape"] if name else None
        if not shape:
            raise ConfigError("cannot tell the input shape from the run: pass --input-shape CxHxW")
    else:
        try:
            shape = tuple(int(part) for part in input_shape.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--input-shape must look like 3x32x32, got '{input_shape}'") from None
    path = models.export(model.cpu(), out, input_shape=shape, format=export_format)
    console.print(f"{export_format} model written to {path}", highlight=False)
