"""Pre-activation ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016).

The CIFAR variant used in adversarial-training code (Rice et al. 2020, locuslab/robust_overfitting):
3x3 stride-1 stem, BN-ReLU-conv blocks with a 1x1 projection shortcut on the pre-activated input,
a final BN-ReLU (`bn`) before global average pooling, and the linear head `fc` (`linear` there).
`final_bn=False` gives the kuangliu/pytorch-cifar layout (ARD, RSLAD), which has no final BN-ReLU:
pooling follows the last block directly.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.models.base import Classifier, check_width, global_pool, scaled
from robustdistill.models.registry import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus identity (or 1x1 conv of the pre-activated input)."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.has_projection = stride != 1 or in_planes != planes
        self.shortcut = nn.Sequential()
        if self.has_projection:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.has_projection else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(Classifier):
    """Pre-activation ResNet; `width` multiplies every channel count (feature_dim = 512 * width)."""

    def __init__(
        self,
        num_blocks: tuple[int, int, int, int] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        final_bn: bool = True,
    ) -> None:
        super().__init__(num_classes, in_channels)
        if not isinstance(final_bn, bool):
            raise ConfigError(f"option 'final_bn' must be true or false, got {final_bn!r}")
        width = check_width(width)
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        in_planes = planes[0]
        stages = []
        for out_planes, blocks, stride in zip(planes, num_blocks, (1, 2, 2, 2), strict=True):
            layers = []
            for i in range(blocks):
                layers.append(PreActBlock(in_planes, out_planes, stride if i == 0 else 1))
                in_planes = out_planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(planes[3]) if final_bn else None
        self.feature_dim = planes[3]
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def embed(self, z: Tensor) -> Tensor:
        out = self.conv1(z)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return global_pool(F.relu(self.bn(out)) if self.bn is not None else out)


@register_model("preact-resnet-18", aliases=("preactresnet18", "preact-resnet18"))
def preact_resnet18(
    num_classes: int = 10, in_channels: int = 3, width: float = 1.0, final_bn: bool = True
) -> PreActResNet:
    """PreAct ResNet-18 (11.2M parameters at 10 classes and width 1); `final_bn=False`: kuangliu layout."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels, width, final_bn)
