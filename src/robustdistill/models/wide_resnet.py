"""Wide residual networks (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

The TRADES variant (Zhang et al. 2019, yaodongyu/TRADES `models/wideresnet.py`), also used by MART,
ARD and RSLAD teachers, with the same module names so that their checkpoints load unchanged:
`conv1`, `block{1,2,3}.layer.{i}.bn1/conv1/bn2/conv2/convShortcut`, `bn1`, `fc`. Channel widths are
16, 16K, 32K, 64K; each of the three groups has (D - 4) / 6 pre-activation basic blocks. The unused
`sub_block1` of some TRADES versions is not built (`convert_state_dict` drops its weights).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.models.base import Classifier, global_pool
from robustdistill.models.registry import WRN_FAMILY, register_model


class BasicBlock(nn.Module):
    """Pre-activation block; when channels change, the shortcut is a 1x1 conv of the activated input."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        if self.convShortcut is None:
            return x + out
        return self.convShortcut(act) + out


class NetworkBlock(nn.Module):
    """A group of `n` blocks held as `self.layer` (an `nn.Sequential`), as in the TRADES code."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, dropout)
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(Classifier):
    """WRN-depth-widen_factor; feature_dim = 64 * widen_factor."""

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(num_classes, in_channels)
        if not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"wide ResNet depth must satisfy (depth - 4) % 6 == 0 and depth >= 10, got {depth!r}.")
        if not isinstance(widen_factor, int) or widen_factor < 1:
            raise ConfigError(f"widen_factor must be a positive integer, got {widen_factor!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}.")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth = depth
        self.widen_factor = widen_factor
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1, dropout)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2, dropout)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.feature_dim = channels[3]
        self.fc = nn.Linear(channels[3], num_classes)
        for module in self.modules():  # the initialisation of the TRADES code
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def embed(self, z: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(z))))
        return global_pool(F.relu(self.bn1(out)))


@register_model(WRN_FAMILY, aliases=("wideresnet",))
def wide_resnet(
    num_classes: int = 10, in_channels: int = 3, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0
) -> WideResNet:
    """Any wide ResNet; `create("wrn-D-K")` is this with depth D and widen_factor K."""
    return WideResNet(depth, widen_factor, num_classes, in_channels, dropout)


@register_model("wrn-34-10")
def wrn_34_10(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-34-10, the TRADES / MART / ARD / RSLAD teacher (46.2M parameters at 10 classes)."""
    return WideResNet(34, 10, num_classes, in_channels, dropout)


@register_model("wrn-28-10")
def wrn_28_10(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> WideResNet:
    """WRN-28-10 (36.5M parameters at 10 classes)."""
    return WideResNet(28, 10, num_classes, in_channels, dropout)
