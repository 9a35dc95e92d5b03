"""CIFAR ResNets (He et al. 2016, the 6n+2 family) with the layout of RepDistiller's ``models/resnet.py``.

Stem 3x3 conv, three stages of basic blocks at 32x32, 16x16 and 8x8, an 8x8 average pool and ``fc``.
Features: the stem output, then each stage's output; pre-activation features: each stage's last residual sum
before its ReLU (the stem's is the stem output itself).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.models.base import ModelOutput, register_model
from tekapbench.models.layers import Stage, classify, conv_bn, init_conv_bn_


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        needs_projection = stride != 1 or in_channels != channels
        self.downsample = conv_bn(in_channels, channels, stride=stride) if needs_projection else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        return F.relu(preact), preact


class ResNet(nn.Module):
    """``depth`` = 6n+2 (n blocks per stage); ``filters`` = (stem, stage1, stage2, stage3) widths."""

    def __init__(self, depth: int, filters: Sequence[int], num_classes: int = 100):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, ...), got {depth}")
        if len(filters) != 4:
            raise ValueError(f"filters must give 4 widths (stem and 3 stages), got {list(filters)}")
        n = (depth - 2) // 6
        self.conv1 = conv3x3(3, filters[0])
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.layer1 = self._make_stage(filters[0], filters[1], n, stride=1)
        self.layer2 = self._make_stage(filters[1], filters[2], n, stride=2)
        self.layer3 = self._make_stage(filters[2], filters[3], n, stride=2)
        self.fc = nn.Linear(filters[3], num_classes)
        init_conv_bn_(self)

    @staticmethod
    def _make_stage(in_channels: int, channels: int, blocks: int, stride: int) -> Stage:
        return Stage(
            BasicBlock(in_channels, channels, stride),
            *(BasicBlock(channels, channels) for _ in range(blocks - 1)),
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f0 = F.relu(self.bn1(self.conv1(x)))  # 32x32
        f1, p1 = self.layer1(f0)  # 32x32
        f2, p2 = self.layer2(f1)  # 16x16
        f3, p3 = self.layer3(f2)  # 8x8
        return classify(self.fc, F.avg_pool2d(f3, 8), (f0, f1, f2, f3), (f0, p1, p2, p3))


_STANDARD = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)
_TINY = (8, 8, 16, 32)


@register_model("resnet8")
def resnet8(num_classes: int = 100) -> ResNet:
    return ResNet(8, _STANDARD, num_classes)


@register_model("resnet14")
def resnet14(num_classes: int = 100) -> ResNet:
    return ResNet(14, _STANDARD, num_classes)


@register_model("resnet20")
def resnet20(num_classes: int = 100) -> ResNet:
    return ResNet(20, _STANDARD, num_classes)


@register_model("resnet32")
def resnet32(num_classes: int = 100) -> ResNet:
    return ResNet(32, _STANDARD, num_classes)


@register_model("resnet44")
def resnet44(num_classes: int = 100) -> ResNet:
    return ResNet(44, _STANDARD, num_classes)


@register_model("resnet56")
def resnet56(num_classes: int = 100) -> ResNet:
    return ResNet(56, _STANDARD, num_classes)


@register_model("resnet110")
def resnet110(num_classes: int = 100) -> ResNet:
    return ResNet(110, _STANDARD, num_classes)


@register_model("resnet8x4")
def resnet8x4(num_classes: int = 100) -> ResNet:
    return ResNet(8, _WIDE, num_classes)


@register_model("resnet32x4")
def resnet32x4(num_classes: int = 100) -> ResNet:
    return ResNet(32, _WIDE, num_classes)


@register_model("resnet20x4")
def resnet20x4(num_classes: int = 100) -> ResNet:
    """A teacher assistant between resnet32x4 and resnet8x4 (TAKD, DGKD)."""
    return ResNet(20, _WIDE, num_classes)


@register_model("resnet14x4")
def resnet14x4(num_classes: int = 100) -> ResNet:
    """A teacher assistant between resnet32x4 and resnet8x4 (TAKD, DGKD)."""
    return ResNet(14, _WIDE, num_classes)


@register_model("resnet8_tiny")
def resnet8_tiny(num_classes: int = 100) -> ResNet:
    """Smoke-test student: resnet8 at half width (not a published architecture)."""
    return ResNet(8, _TINY, num_classes)


@register_model("resnet20_tiny")
def resnet20_tiny(num_classes: int = 100) -> ResNet:
    """Smoke-test teacher: resnet20 at half width (not a published architecture)."""
    return ResNet(20, _TINY, num_classes)


@register_model("resnet14_tiny")
def resnet14_tiny(num_classes: int = 100) -> ResNet:
    """Smoke-test teacher assistant between resnet20_tiny and resnet8_tiny (not a published architecture)."""
    return ResNet(14, _TINY, num_classes)
