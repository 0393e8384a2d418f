"""The DeepMind pre-activation ResNet of RobustBench (Rebuffi et al., "Fixing Data Augmentation to
Improve Adversarial Robustness", NeurIPS 2021; Gowal et al., "Improving Robustness using Generated
Data", NeurIPS 2021).

RobustBench `DMPreActResNet`: a 3x3 stem (64 channels), four stages of pre-activation blocks (64, 128,
256, 512 channels, strides 1, 2, 2, 2), Swish activations, hand-made `SAME` padding
(`models.deepmind`), and, unlike the other pre-activation ResNets, a **3x3** projection shortcut applied
to the padded, *non-activated* input. Module names are those of the RobustBench code: `conv_2d`,
`layer_{s}.{i}.batchnorm_0/conv_2d_1/batchnorm_1/conv_2d_2/shortcut`, `batchnorm`, `logits` (the
head, also reachable as `fc`). `width` (ours; 1.0 = RobustBench) scales every channel count for small
test models; the final pooling is global (RobustBench: 4x4, the same on 32x32 inputs).
"""

from __future__ import annotations

from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.models import deepmind
from robustdistill.models.base import Classifier, check_width, global_pool, scaled
from robustdistill.models.deepmind import same_pad
from robustdistill.models.registry import register_model

DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DMPreActBlock(nn.Module):
    """act(BN(x)) -> pad -> conv3x3(stride) -> act(BN) -> conv3x3, plus x or conv3x3(pad(x), stride)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, act: nn.Module) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.conv_2d_1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.conv_2d_2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
            if stride != 1 or in_planes != out_planes
            else None
        )
        self.stride = stride
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_2d_1(same_pad(self.act(self.batchnorm_0(x)), self.stride))
        out = self.conv_2d_2(self.act(self.batchnorm_1(out)))
        return out + (x if self.shortcut is None else self.shortcut(same_pad(x, self.stride)))


class DMPreActResNet(Classifier):
    """DeepMind PreAct ResNet-18 / 34; feature_dim = 512 * width."""

    own_statistics = True

    def __init__(
        self,
        depth: int = 18,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        activation_name: str = "silu",
    ) -> None:
        super().__init__(num_classes, in_channels)
        if depth not in DEPTHS:
            raise ConfigError(f"DeepMind PreAct ResNet depth must be one of {sorted(DEPTHS)}, got {depth!r}.")
        width = check_width(width)
        self.act = deepmind.activation(activation_name)
        planes = [scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv_2d = nn.Conv2d(in_channels, planes[0], 3, stride=1, padding=1, bias=False)
        in_planes = planes[0]
        stages = []
        for out_planes, blocks, stride in zip(planes, DEPTHS[depth], (1, 2, 2, 2), strict=True):
            layers = []
            for i in range(blocks):
                layers.append(DMPreActBlock(in_planes, out_planes, stride if i == 0 else 1, self.act))
                in_planes = out_planes
            stages.append(nn.Sequential(*layers))
        self.layer_0, self.layer_1, self.layer_2, self.layer_3 = stages
        self.batchnorm = nn.BatchNorm2d(planes[3])
        self.feature_dim = planes[3]
        self.logits = nn.Linear(planes[3], num_classes)
        statistics = deepmind.default_statistics(num_classes, in_channels)
        if statistics is not None:
            self.set_normalization(*statistics)

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        return self.logits

    def embed(self, z: Tensor) -> Tensor:
        out = self.layer_3(self.layer_2(self.layer_1(self.layer_0(self.conv_2d(z)))))
        return global_pool(self.act(self.batchnorm(out)))


@register_model("dm-preact-resnet-18", aliases=("dmpreactresnet18",))
def dm_preact_resnet18(
    num_classes: int = 10, in_channels: int = 3, width: float = 1.0, activation: str = "silu"
) -> DMPreActResNet:
    """DeepMind PreAct ResNet-18 (RobustBench Rebuffi2021Fixing_R18_*, Gowal2021Improving_R18_*, ...)."""
    return DMPreActResNet(18, num_classes, in_channels, width, activation)


@register_model("dm-preact-resnet-34", aliases=("dmpreactresnet34",))
def dm_preact_resnet34(
    num_classes: int = 10, in_channels: int = 3, width: float = 1.0, activation: str = "silu"
) -> DMPreActResNet:
    """DeepMind PreAct ResNet-34 (the depth-34 option of the same RobustBench class)."""
    return DMPreActResNet(34, num_classes, in_channels, width, activation)
