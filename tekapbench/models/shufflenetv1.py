"""ShuffleNet V1 for CIFAR (Zhang et al. 2018), the layout of RepDistiller's ``models/ShuffleNetv1.py``.

1x1 stem to 24 channels at 32x32, three stages of grouped bottlenecks (the first of each stage strided, its
output concatenated with an average-pooled shortcut), a 4x4 average pool and ``linear``. Features: stem
output and each stage's output; pre-activation features: each stage's last block before its ReLU.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.models.base import ModelOutput, register_model
from tekapbench.models.layers import ChannelShuffle, Stage, classify

_STEM_CHANNELS = 24


class ShuffleBottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid_channels = out_channels // 4
        # the stem has too few channels to group the first 1x1 conv
        first_groups = 1 if in_channels == _STEM_CHANNELS else groups
        self.conv1 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.shuffle1 = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(
            mid_channels, mid_channels, kernel_size=3, stride=stride, padding=1, groups=mid_channels, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.shuffle1(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            preact = torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1)
        else:
            preact = out + x
        return F.relu(preact), preact


class ShuffleNetV1(nn.Module):
    def __init__(self, stage_channels: Sequence[int], stage_blocks: Sequence[int], groups: int, num_classes: int = 100):
        super().__init__()
        self.conv1 = nn.Conv2d(3, _STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS)
        in_channels = _STEM_CHANNELS
        stages = []
        for out_channels, blocks in zip(stage_channels, stage_blocks, strict=True):
            # the first block's output is concatenated with its (pooled) input to reach out_channels
            stage = [ShuffleBottleneck(in_channels, out_channels - in_channels, stride=2, groups=groups)]
            stage += [ShuffleBottleneck(out_channels, out_channels, 1, groups) for _ in range(blocks - 1)]
            stages.append(Stage(*stage))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f0 = F.relu(self.bn1(self.conv1(x)))  # 32x32
        f1, p1 = self.layer1(f0)  # 16x16
        f2, p2 = self.layer2(f1)  # 8x8
        f3, p3 = self.layer3(f2)  # 4x4
        return classify(self.linear, F.avg_pool2d(f3, 4), (f0, f1, f2, f3), (f0, p1, p2, p3))


@register_model("ShuffleV1")
def shufflev1(num_classes: int = 100) -> ShuffleNetV1:
    return ShuffleNetV1((240, 480, 960), (4, 8, 4), groups=3, num_classes=num_classes)
