"""CIFAR ResNet-18/34 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

The CIFAR variant used by the ARD and RSLAD code (kuangliu/pytorch-cifar): a 3x3 stride-1 stem
without max-pool, four stages of basic blocks (64, 128, 256, 512 channels, strides 1, 2, 2, 2),
global average pooling and a linear head. Module names follow that code (`conv1`, `bn1`,
`layerN.i.conv1/bn1/conv2/bn2/shortcut.0/shortcut.1`) except the head, `fc` here (`linear` there;
`convert_state_dict` renames it).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.models.base import Classifier, check_width, global_pool, scaled
from robustdistill.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (1x1 conv-BN projection when needed)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(Classifier):
    """CIFAR ResNet with basic blocks; `width` multiplies every channel count (1.0 = the paper)."""

    def __init__(
        self,
        num_blocks: tuple[int, int, int, int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
    ) -> None:
        super().__init__(num_classes, in_channels)
        width = check_width(width)
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        in_planes = planes[0]
        stages = []
        for out_planes, blocks, stride in zip(planes, num_blocks, (1, 2, 2, 2), strict=True):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(in_planes, out_planes, stride if i == 0 else 1))
                in_planes = out_planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = planes[3]
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def embed(self, z: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(z)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return global_pool(out)


@register_model("resnet-18", aliases=("resnet18",))
def resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> ResNet:
    """ResNet-18 for CIFAR (11.2M parameters at 10 classes); feature_dim = 512 * width."""
    return ResNet((2, 2, 2, 2), num_classes, in_channels, width)


@register_model("resnet-34", aliases=("resnet34",))
def resnet34(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> ResNet:
    """ResNet-34 for CIFAR (21.3M parameters at 10 classes); feature_dim = 512 * width."""
    return ResNet((3, 4, 6, 3), num_classes, in_channels, width)
