"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

The CIFAR variant of the ARD and RSLAD code (kuangliu/pytorch-cifar): stride-1 3x3 stem, the
second stage at stride 1 instead of 2 (overall downsampling 8), a 1x1 conv-BN projection on
stride-1 blocks whose channels change, 1280-d final 1x1 conv, global average pooling, linear
head `fc` (`linear` there). Module names otherwise follow that code (`conv1`, `bn1`,
`layers.i.conv1/bn1/conv2/bn2/conv3/bn3/shortcut`, `conv2`, `bn2`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.models.base import Classifier, check_width, global_pool
from robustdistill.models.registry import register_model

# (expansion, out_planes, num_blocks, stride) per stage; stride of stage 2 is 1 for 32x32 inputs.
CIFAR_CONFIG = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled channel count to a multiple of `divisor` (as in the reference implementation)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; residual when the stride is 1."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        planes = expansion * in_planes
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 1:
            out = out + self.shortcut(x)
        return out


class MobileNetV2(Classifier):
    """CIFAR MobileNetV2; `width` scales all but the last (1280-d) layer for width <= 1."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__(num_classes, in_channels)
        width = check_width(width)
        stem = make_divisible(32 * width)
        last = make_divisible(1280 * width) if width > 1.0 else 1280
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks = []
        in_planes = stem
        for expansion, out_planes, num_blocks, stride in CIFAR_CONFIG:
            out_planes = make_divisible(out_planes * width)
            for i in range(num_blocks):
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, stride if i == 0 else 1))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(in_planes, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.feature_dim = last
        self.fc = nn.Linear(last, num_classes)

    def embed(self, z: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(z)))
        out = self.layers(out)
        return global_pool(F.relu(self.bn2(self.conv2(out))))


@register_model("mobilenet-v2", aliases=("mobilenetv2",))
def mobilenet_v2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> MobileNetV2:
    """CIFAR MobileNetV2 (2.30M parameters at 10 classes); feature_dim = 1280."""
    return MobileNetV2(num_classes, in_channels, width)
