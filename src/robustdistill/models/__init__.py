"""Architectures, their registry, safe save/load and conversion of foreign state dicts.

>>> from robustdistill import models
>>> net = models.create("preact-resnet-18", num_classes=10, width=0.25)
>>> logits, feats = net.forward_features(x)          # x in [0, 1], (B, 3, H, W)
>>> models.export(net, "net.pt", input_shape=(3, 32, 32))  # TorchScript; also "torch-export", "onnx"

See docs/models.md.
"""

from robustdistill.models import (  # registers
    dm_preact_resnet,
    dm_wide_resnet,
    lenet_small,
    mobilenet_v2,
    preact_resnet,
    resnet,
    small_cnn,
    wide_resnet,
    zoo,
)
from robustdistill.models.base import Classifier
from robustdistill.models.convert import convert_state_dict
from robustdistill.models.dm_preact_resnet import DMPreActResNet
from robustdistill.models.dm_wide_resnet import DMWideResNet
from robustdistill.models.export import FORMATS as EXPORT_FORMATS
from robustdistill.models.export import export
from robustdistill.models.io import FORMAT_VERSION, load, load_into, load_state_dict_file, load_weights, save
from robustdistill.models.lenet_small import LeNetSmall
from robustdistill.models.mobilenet_v2 import MobileNetV2
from robustdistill.models.preact_resnet import PreActResNet
from robustdistill.models.registry import available, create, register_model, resolve
from robustdistill.models.resnet import ResNet
from robustdistill.models.small_cnn import SmallCNN
from robustdistill.models.wide_resnet import WideResNet

del dm_preact_resnet, dm_wide_resnet, lenet_small, mobilenet_v2, preact_resnet, resnet, small_cnn, wide_resnet

__all__ = [
    "EXPORT_FORMATS",
    "FORMAT_VERSION",
    "Classifier",
    "DMPreActResNet",
    "DMWideResNet",
    "LeNetSmall",
    "MobileNetV2",
    "PreActResNet",
    "ResNet",
    "SmallCNN",
    "WideResNet",
    "available",
    "convert_state_dict",
    "create",
    "export",
    "load",
    "load_into",
    "load_state_dict_file",
    "load_weights",
    "register_model",
    "resolve",
    "save",
    "zoo",
]
