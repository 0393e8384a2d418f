"""Pieces shared by the DeepMind architectures of RobustBench (Gowal et al. 2020, Rebuffi et al. 2021).

Their PyTorch code (deepmind-research `adversarial_robustness/pytorch/model_zoo.py`, copied into
RobustBench `model_zoo/architectures/dm_wide_resnet.py`) normalises inside the model with fixed
CIFAR constants, uses Swish (`x * sigmoid(x)`, which is `nn.SiLU`) in every RobustBench entry, and
pads each 3x3 convolution by hand to mimic TensorFlow's `SAME`: `(1, 1, 1, 1)` at stride 1 and
`(0, 1, 0, 1)` (right and bottom only) at stride 2.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustdistill.errors import ConfigError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    """`silu` (= `swish`, the RobustBench models) or `relu` (the default of the DeepMind code)."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}.")
    return ACTIVATIONS[name]()


def same_pad(x: Tensor, stride: int) -> Tensor:
    """The hand-made padding before a 3x3 convolution of the DeepMind code (see the module doc)."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


def default_statistics(num_classes: int, in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The constants RobustBench builds these models with: CIFAR-100's for 100 classes, else CIFAR-10's.

    None (the identity) for inputs that are not RGB.
    """
    if in_channels != 3:
        return None
    return (CIFAR100_MEAN, CIFAR100_STD) if num_classes == 100 else (CIFAR10_MEAN, CIFAR10_STD)
