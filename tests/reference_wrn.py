"""The WideResNet of yaodongyu/TRADES `models/wideresnet.py`, which RobustBench's `WideResNet` keeps
(plus `sub_block1` and `bias_last` switches): the reference key layout and forward pass for the
conversion tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RefBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equalInOut = cin == cout
        self.convShortcut = None if self.equalInOut else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class RefNetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(
            *[RefBasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x):
        return self.layer(x)


class RefWideResNet(nn.Module):
    """RobustBench `WideResNet(depth, num_classes, widen_factor, sub_block1, bias_last)`."""

    def __init__(self, depth, num_classes, widen_factor, sub_block1, bias_last):
        super().__init__()
        c = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, c[0], 3, 1, 1, bias=False)
        self.block1 = RefNetworkBlock(n, c[0], c[1], 1)
        if sub_block1:
            self.sub_block1 = RefNetworkBlock(n, c[0], c[1], 1)
        self.block2 = RefNetworkBlock(n, c[1], c[2], 2)
        self.block3 = RefNetworkBlock(n, c[2], c[3], 2)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(c[3], num_classes, bias=bias_last)
        self.nChannels = c[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.avg_pool2d(self.relu(self.bn1(out)), 8)
        return self.fc(out.view(-1, self.nChannels))
