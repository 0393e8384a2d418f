"""SmallCNN, the MNIST model of TRADES (Zhang et al., "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019; yaodongyu/TRADES `models/small_cnn.py`).

conv32-conv32-maxpool-conv64-conv64-maxpool (3x3 convs without padding), then fc200-fc200-fc.
Module names follow the TRADES code (`feature_extractor.conv1..conv4`, `classifier.fc1..fc3`), so its
checkpoints load unchanged. Two additions let it run on any image size: an adaptive average pool
to 4x4 before flattening (the identity at 28x28, where the conv stack already ends at 4x4), and
zero-padding (in normalised space, that is with the dataset mean) of inputs smaller than 16x16
(for example 8x8 digits) up to 16x16, the smallest size the unpadded conv stack accepts.
Features are the 200-d activations after the second fully connected layer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.models.base import Classifier, check_width, scaled
from robustdistill.models.registry import register_model

MIN_SIZE = 16
POOLED = 4


class SmallCNN(Classifier):
    """TRADES SmallCNN; `width` scales the conv channels, `hidden` is the fc width (feature_dim)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: float = 1.0,
        hidden: int = 200,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(num_classes, in_channels)
        width = check_width(width)
        if not isinstance(hidden, int) or hidden < 1:
            raise ConfigError(f"hidden must be a positive integer, got {hidden!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}.")
        c1, c2 = scaled(32, width), scaled(64, width)
        self.feature_extractor = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(in_channels, c1, 3)),
                    ("relu1", nn.ReLU()),
                    ("conv2", nn.Conv2d(c1, c1, 3)),
                    ("relu2", nn.ReLU()),
                    ("maxpool1", nn.MaxPool2d(2, 2)),
                    ("conv3", nn.Conv2d(c1, c2, 3)),
                    ("relu3", nn.ReLU()),
                    ("conv4", nn.Conv2d(c2, c2, 3)),
                    ("relu4", nn.ReLU()),
                    ("maxpool2", nn.MaxPool2d(2, 2)),
                ]
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(c2 * POOLED * POOLED, hidden)),
                    ("relu1", nn.ReLU()),
                    ("drop", nn.Dropout(dropout)),
                    ("fc2", nn.Linear(hidden, hidden)),
                    ("relu2", nn.ReLU()),
                    ("fc3", nn.Linear(hidden, num_classes)),
                ]
            )
        )
        self.feature_dim = hidden
        for module in self.modules():  # the initialisation of the TRADES code
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:  # always there (bias=True); narrows Tensor | None
                    nn.init.zeros_(module.bias)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        # nn.Module.__getattr__ is typed `Tensor | Module`; classifier.fc3 is the nn.Linear built above.
        return cast(nn.Linear, self.classifier.fc3)

    def embed(self, z: Tensor) -> Tensor:
        pad_h = max(0, MIN_SIZE - z.shape[-2])
        pad_w = max(0, MIN_SIZE - z.shape[-1])
        if pad_h or pad_w:
            z = F.pad(z, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        out = F.adaptive_avg_pool2d(self.feature_extractor(z), POOLED)
        out = torch.flatten(out, 1)
        # Submodules by name (nn.Module.__getattr__ is typed `Tensor | Module`).
        c = self.classifier
        drop, fc1, fc2 = cast(nn.Dropout, c.drop), cast(nn.Linear, c.fc1), cast(nn.Linear, c.fc2)
        out = drop(F.relu(fc1(out)))
        return F.relu(fc2(out))


@register_model("smallcnn", aliases=("small-cnn",))
def small_cnn(
    num_classes: int = 10, in_channels: int = 1, width: float = 1.0, hidden: int = 200, dropout: float = 0.5
) -> SmallCNN:
    """TRADES SmallCNN (0.31M parameters at 28x28, 10 classes); feature_dim = hidden = 200.

    The last layer starts at zero, as in TRADES.
    """
    return SmallCNN(num_classes, in_channels, width, hidden, dropout)
