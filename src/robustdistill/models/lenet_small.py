"""LeNetSmall, the small CNN of Croce, Andriushchenko and Hein ("Provable Robustness of ReLU Networks via
Maximization of Linear Regions", AISTATS 2019; max-andr/provable-robustness-max-linear-regions
`models.py`), which is the small convolutional network of Wong and Kolter (ICML 2018).

conv16 (4x4, stride 2) - conv32 (4x4, stride 2) - fc100 - fc, ReLU after every layer but the last.
TensorFlow's 'SAME' padding of a 4x4 kernel at stride 2 on an even size pads one pixel on each side,
which is `padding=1` here: 28x28 -> 14x14 -> 7x7. The paper's PGD-trained model of this architecture is
the Fashion-MNIST anchor of `docs/results.md` (88.46 % clean at L-inf eps 0.1). At 28x28 it costs
0.61 M multiply-adds per image, 16x fewer than `smallcnn`.
One addition lets it take any image size: an adaptive average pool to 7x7 before flattening (the
identity at 28x28). Features are the 100-d activations after the hidden fully connected layer. He-normal initialisation
and zero biases as in the original code, except the last layer, which starts at zero as SmallCNN's
(TRADES) does: from a He-normal head, SGD with momentum 0.9 at lr 0.01 or 0.05 diverged under PGD
training (training loss 3.4 in the first epoch, chance accuracy), where the original used Adam.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.models.base import Classifier, check_width, scaled
from robustdistill.models.registry import register_model

POOLED = 7


class LeNetSmall(Classifier):
    """Two strided 4x4 convolutions and one hidden fully connected layer; `width` scales the convs."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, hidden: int = 100) -> None:
        super().__init__(num_classes, in_channels)
        width = check_width(width)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ConfigError(f"hidden must be a positive integer, got {hidden!r}.")
        c1, c2 = scaled(16, width), scaled(32, width)
        self.conv1 = nn.Conv2d(in_channels, c1, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)
        self.fc1 = nn.Linear(c2 * POOLED * POOLED, hidden)
        self.fc = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden
        for module in (self.conv1, self.conv2, self.fc1):
            fan_in = module.weight[0].numel()
            nn.init.normal_(module.weight, std=math.sqrt(2.0 / fan_in))
            if module.bias is not None:  # always there (bias=True); narrows Tensor | None
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.fc.weight)  # as SmallCNN (TRADES): SGD at lr >= 0.01 diverges from a He-normal head
        nn.init.zeros_(self.fc.bias)

    def embed(self, z: Tensor) -> Tensor:
        out = F.relu(self.conv2(F.relu(self.conv1(z))))
        out = F.adaptive_avg_pool2d(out, POOLED)
        return F.relu(self.fc1(torch.flatten(out, 1)))


@register_model("lenet-small", aliases=("croce-cnn",))
def lenet_small(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, hidden: int = 100) -> LeNetSmall:
    """LeNetSmall of Croce et al. 2019 / Wong & Kolter 2018 (0.17 M parameters, 0.61 M MACs at 28x28)."""
    return LeNetSmall(num_classes, in_channels, width, hidden)
