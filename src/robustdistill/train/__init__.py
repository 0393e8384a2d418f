"""Training: `fit`, its training state, checkpoints, schedules, EMA and SWA."""

from robustdistill.runtime.metrics import read_metrics
from robustdistill.train.checkpoint import latest_valid_checkpoint, load_checkpoint, save_checkpoint
from robustdistill.train.epoch import Evaluation
from robustdistill.train.loop import FitResult, fit
from robustdistill.train.state import TrainingState

__all__ = [
    "Evaluation",
    "FitResult",
    "TrainingState",
    "fit",
    "latest_valid_checkpoint",
    "load_checkpoint",
    "read_metrics",
    "save_checkpoint",
]
