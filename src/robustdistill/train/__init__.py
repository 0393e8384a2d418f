"""Training: `fit`, checkpoints, schedules, EMA, metrics and distributed helpers."""

from robustdistill.train.checkpoint import latest_valid_checkpoint, load_checkpoint, save_checkpoint
from robustdistill.train.loop import FitResult, fit
from robustdistill.train.metrics import read_metrics

__all__ = ["FitResult", "fit", "latest_valid_checkpoint", "load_checkpoint", "read_metrics", "save_checkpoint"]
