"""The DeepMind wide ResNet of RobustBench's strongest CIFAR teachers (Gowal et al., "Uncovering the
Limits of Adversarial Training against Norm-Bounded Adversarial Examples", 2020; Rebuffi et al.,
"Fixing Data Augmentation to Improve Adversarial Robustness", NeurIPS 2021).

RobustBench `DMWideResNet`: the Zagoruyko & Komodakis layout (16, 16K, 32K, 64K channels, (D - 4) / 6
pre-activation blocks per group) with Swish activations, hand-made `SAME` padding (`models.deepmind`)
and a 1x1 shortcut on the activated input when the channel count changes. Module names are those of
the RobustBench code, so its checkpoints load unchanged: `init_conv`,
`layer.{g}.block.{i}.batchnorm_0/conv_0/batchnorm_1/conv_1/shortcut`, `batchnorm`, `logits`
(the head, also reachable as `fc`). RobustBench's `padding` option (0 in every entry) is not built,
and the final pooling is global (RobustBench: 8x8, the same on 32x32 inputs).
"""

from __future__ import annotations

from torch import Tensor, nn

from robustdistill.errors import ConfigError
from robustdistill.models import deepmind
from robustdistill.models.base import Classifier, global_pool
from robustdistill.models.deepmind import same_pad
from robustdistill.models.registry import DM_WRN_FAMILY, register_model


class DMBlock(nn.Module):
    """act(BN(x)) -> pad -> conv3x3(stride) -> act(BN) -> conv3x3, plus x or conv1x1(act(BN(x)))."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, act: nn.Module) -> None:
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False) if in_planes != out_planes else None
        )
        self.stride = stride
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        activated = self.act(self.batchnorm_0(x))
        out = self.conv_0(same_pad(activated, self.stride))
        out = self.conv_1(self.act(self.batchnorm_1(out)))
        return (x if self.shortcut is None else self.shortcut(activated)) + out


class DMBlockGroup(nn.Module):
    """`n` blocks held as `self.block`, the first one with the group's stride."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, act: nn.Module) -> None:
        super().__init__()
        self.block = nn.Sequential(
            *[DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, act) for i in range(n)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DMWideResNet(Classifier):
    """DeepMind WRN-depth-widen_factor; feature_dim = 64 * widen_factor."""

    own_statistics = True

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        activation_name: str = "silu",
    ) -> None:
        super().__init__(num_classes, in_channels)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6 != 0:
            raise ConfigError(f"wide ResNet depth must satisfy (depth - 4) % 6 == 0 and depth >= 10, got {depth!r}.")
        if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
            raise ConfigError(f"widen_factor must be a positive integer, got {widen_factor!r}.")
        self.act = deepmind.activation(activation_name)
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.init_conv = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            DMBlockGroup(n, channels[0], channels[1], 1, self.act),
            DMBlockGroup(n, channels[1], channels[2], 2, self.act),
            DMBlockGroup(n, channels[2], channels[3], 2, self.act),
        )
        self.batchnorm = nn.BatchNorm2d(channels[3])
        self.feature_dim = channels[3]
        self.logits = nn.Linear(channels[3], num_classes)
        statistics = deepmind.default_statistics(num_classes, in_channels)
        if statistics is not None:
            self.set_normalization(*statistics)

    @property
    def fc(self) -> nn.Linear:  # type: ignore[override]
        return self.logits

    def embed(self, z: Tensor) -> Tensor:
        out = self.layer(self.init_conv(z))
        return global_pool(self.act(self.batchnorm(out)))


@register_model(DM_WRN_FAMILY, aliases=("dmwideresnet",))
def dm_wide_resnet(
    num_classes: int = 10, in_channels: int = 3, depth: int = 28, widen_factor: int = 10, activation: str = "silu"
) -> DMWideResNet:
    """DeepMind wide ResNet; `create("dm-wrn-D-K")` is this with depth D and widen_factor K.

    RobustBench holds it as WRN-28-10, 34-10, 34-20, 70-16 and 106-16 (Gowal et al. 2020, 2021,
    Rebuffi et al. 2021, Wang et al. 2023, ...); mean / std default to the CIFAR-10 constants
    (CIFAR-100's at 100 classes).
    """
    return DMWideResNet(depth, widen_factor, num_classes, in_channels, activation)
