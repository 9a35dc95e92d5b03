"""The CIFAR ResNet50 of RepDistiller's ``models/resnetv2.py`` (ImageNet ResNet50 with a 3x3 stride-1 stem).

Stem 3x3 conv at 32x32 (no max pool), four stages of bottleneck blocks at 32, 16, 8 and 4 pixels,
global average pool and ``linear``. Features: stem output, then each stage's output; pre-activation features:
each stage's last residual sum before its ReLU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.models.base import ModelOutput, register_model
from tekapbench.models.layers import Stage, classify, conv_bn, init_conv_bn_


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = conv_bn(in_channels, out_channels, stride=stride) if needs_projection else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        preact = self.bn3(self.conv3(out)) + self.shortcut(x)
        return F.relu(preact), preact


class ResNetV2(nn.Module):
    """Bottleneck ResNet with stage widths 64, 128, 256, 512 (x4 expansion) and ``blocks`` per stage."""

    def __init__(self, blocks: Sequence[int], num_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_channels = 64
        stages = []
        for i, (channels, count) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(in_channels, channels, stride)]
            in_channels = channels * Bottleneck.expansion
            stage += [Bottleneck(in_channels, channels) for _ in range(count - 1)]
            stages.append(Stage(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_channels, num_classes)
        init_conv_bn_(self)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f0 = F.relu(self.bn1(self.conv1(x)))  # 32x32
        f1, p1 = self.layer1(f0)  # 32x32
        f2, p2 = self.layer2(f1)  # 16x16
        f3, p3 = self.layer3(f2)  # 8x8
        f4, p4 = self.layer4(f3)  # 4x4
        pooled = F.adaptive_avg_pool2d(f4, 1)
        return classify(self.linear, pooled, (f0, f1, f2, f3, f4), (f0, p1, p2, p3, p4))


@register_model("ResNet50")
def resnet50(num_classes: int = 100) -> ResNetV2:
    return ResNetV2((3, 4, 6, 3), num_classes)
