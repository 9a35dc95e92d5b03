"""ShuffleNet V2 for CIFAR (Ma et al. 2018), the layout of RepDistiller's ``models/ShuffleNetv2.py`` (size 1x).

1x1 stem to 24 channels at 32x32, three stages (a strided down block, then split-transform-concat blocks), a
1x1 conv to 1024 channels, a 4x4 average pool and ``linear``. Features: stem output and each stage's output.
Pre-activation features, as in the reference: the last block's concatenation of its pass-through half with its
branch before the ReLU, taken *before* the channel shuffle (so ``relu(preact)`` is the feature unshuffled).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.models.base import ModelOutput, register_model
from tekapbench.models.layers import ChannelShuffle, Stage, classify

_STEM_CHANNELS = 24


def _conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


def _depthwise3x3(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, groups=channels, bias=False)


class SplitBlock(nn.Module):
    """Half the channels pass through, the other half go through 1x1, depthwise 3x3, 1x1; then shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = _conv1x1(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = _depthwise3x3(half, stride=1)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = _conv1x1(half, half)
        self.bn3 = nn.BatchNorm2d(half)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        passthrough, branch = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        branch_preact = self.bn3(self.conv3(out))
        out = torch.cat([passthrough, F.relu(branch_preact)], 1)
        return self.shuffle(out), torch.cat([passthrough, branch_preact], 1)


class DownBlock(nn.Module):
    """Two strided branches on the whole input, each to half of ``out_channels``; concat and shuffle."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid_channels = out_channels // 2
        # left branch
        self.conv1 = _depthwise3x3(in_channels, stride=2)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = _conv1x1(in_channels, mid_channels)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        # right branch
        self.conv3 = _conv1x1(in_channels, mid_channels)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv4 = _depthwise3x3(mid_channels, stride=2)
        self.bn4 = nn.BatchNorm2d(mid_channels)
        self.conv5 = _conv1x1(mid_channels, mid_channels)
        self.bn5 = nn.BatchNorm2d(mid_channels)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        out = self.shuffle(torch.cat([left, right], 1))
        # never the last block of a stage; the pair only satisfies Stage's protocol
        return out, out


class ShuffleNetV2(nn.Module):
    def __init__(
        self, stage_channels: Sequence[int], stage_blocks: Sequence[int], head_channels: int, num_classes: int = 100
    ):
        super().__init__()
        self.conv1 = _conv1x1(3, _STEM_CHANNELS)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS)
        in_channels = _STEM_CHANNELS
        stages = []
        for out_channels, blocks in zip(stage_channels, stage_blocks, strict=True):
            split_blocks = (SplitBlock(out_channels) for _ in range(blocks))
            stages.append(Stage(DownBlock(in_channels, out_channels), *split_blocks))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = _conv1x1(in_channels, head_channels)
        self.bn2 = nn.BatchNorm2d(head_channels)
        self.linear = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f0 = F.relu(self.bn1(self.conv1(x)))  # 32x32
        f1, p1 = self.layer1(f0)  # 16x16
        f2, p2 = self.layer2(f1)  # 8x8
        f3, p3 = self.layer3(f2)  # 4x4
        pooled = F.avg_pool2d(F.relu(self.bn2(self.conv2(f3))), 4)
        return classify(self.linear, pooled, (f0, f1, f2, f3), (f0, p1, p2, p3))


@register_model("ShuffleV2")
def shufflev2(num_classes: int = 100) -> ShuffleNetV2:
    return ShuffleNetV2((116, 232, 464), (3, 7, 3), head_channels=1024, num_classes=num_classes)
