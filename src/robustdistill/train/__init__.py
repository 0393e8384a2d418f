"""Training: `fit`, checkpoints, schedules, EMA and SWA."""

from robustdistill.runtime.metrics import read_metrics
from robustdistill.train.checkpoint import latest_valid_checkpoint, load_checkpoint, save_checkpoint
from robustdistill.train.loop import FitResult, fit

__all__ = ["FitResult", "fit", "latest_valid_checkpoint", "load_checkpoint", "read_metrics", "save_checkpoint"]
