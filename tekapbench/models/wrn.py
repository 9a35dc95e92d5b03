"""Wide ResNets (Zagoruyko & Komodakis 2016) with the layout of RepDistiller's ``models/wrn.py``.

Pre-activation blocks: each block starts with BN-ReLU on its input, so a stage's output is a raw residual sum.
As in RepDistiller, the features are the stem conv output and the stage outputs (raw sums), and the
pre-activation features are those sums after the BatchNorm that precedes their next ReLU: the ``bn1`` of the
next stage's first block, or the final ``bn1`` for the last stage (the stem's is the stem output itself).
Each block already computes its normalized input, so these cost nothing extra.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.models.base import ModelOutput, register_model
from tekapbench.models.layers import classify, init_conv_bn_


class WideBasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        # attribute name kept from the reference so public checkpoints load
        self.convShortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(out, bn1(x))``: the normalized input is the pre-activation of whatever produced ``x``."""
        normalized = self.bn1(x)
        activated = F.relu(normalized)
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        # a projection shortcut sees the activated input, an identity shortcut the raw one
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out, normalized


class WideStage(nn.Module):
    """``blocks`` wide blocks (keys ``layer.<i>``); returns the output and the first block's normalized input."""

    def __init__(self, blocks: int, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            WideBasicBlock(in_channels, out_channels, stride),
            *(WideBasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, *rest = self.layer
        x, normalized_input = first(x)
        for block in rest:
            x, _ = block(x)
        return x, normalized_input


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor``; ``depth`` = 6n+4 (n blocks per stage)."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(n, widths[0], widths[1], 1)
        self.block2 = WideStage(n, widths[1], widths[2], 2)
        self.block3 = WideStage(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        init_conv_bn_(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f0 = self.conv1(x)  # 32x32
        f1, _ = self.block1(f0)  # 32x32
        f2, p1 = self.block2(f1)  # 16x16
        f3, p2 = self.block3(f2)  # 8x8
        p3 = self.bn1(f3)
        pooled = F.avg_pool2d(F.relu(p3), 8)
        return classify(self.fc, pooled, (f0, f1, f2, f3), (f0, p1, p2, p3))


@register_model("wrn_16_1")
def wrn_16_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 1, num_classes)


@register_model("wrn_16_2")
def wrn_16_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 2, num_classes)


@register_model("wrn_40_1")
def wrn_40_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 1, num_classes)


@register_model("wrn_40_2")
def wrn_40_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 2, num_classes)
