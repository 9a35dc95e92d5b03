"""MobileNetV2 for CIFAR, the layout of RepDistiller's ``models/mobilenetv2.py`` (``mobile_half``: T=6, width 0.5).

Stride-2 3x3 stem, seven groups of inverted residual blocks (``blocks.<group>.<block>``), a 1x1 conv to 1280
channels, average pool and ``classifier.0``. Features, as in the reference: stem output and the outputs of
block groups 1, 2, 4 and 6 (16, 16, 8, 4 and 2 pixels on 32x32 inputs). Blocks end with a linear bottleneck
(no ReLU), so the pre-activation features are the features themselves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.models.base import ModelOutput, register_model
from tekapbench.models.layers import classify, conv_bn, init_conv_bn_

# (channels, blocks, stride of the first block) per block group; the first group does not expand (t=1)
_SETTINGS: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1),
    (24, 2, 1),
    (32, 3, 2),
    (64, 4, 2),
    (96, 3, 1),
    (160, 3, 2),
    (320, 1, 1),
)
# indices of the block groups whose outputs are stage features
_FEATURE_GROUPS = (1, 2, 4, 6)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(*conv_bn(in_channels, out_channels, kernel_size, stride), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            # pointwise expansion
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            # depthwise
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            # pointwise linear projection
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100):
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, channels, 3, stride=2)
        groups = []
        for i, (c, n, s) in enumerate(_SETTINGS):
            out_channels = int(c * width_mult)
            t = 1 if i == 0 else expansion
            group = []
            for stride in [s] + [1] * (n - 1):
                group.append(InvertedResidual(channels, out_channels, stride, t))
                channels = out_channels
            groups.append(nn.Sequential(*group))
        self.blocks = nn.ModuleList(groups)
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, last_channels, 1)
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        init_conv_bn_(self)
        nn.init.normal_(self.classifier[0].weight, 0, 0.01)
        nn.init.zeros_(self.classifier[0].bias)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        out = self.conv1(x)  # 16x16
        features = [out]
        for i, group in enumerate(self.blocks):
            out = group(out)
            if i in _FEATURE_GROUPS:
                features.append(out)
        # the reference pools with a fixed 2x2 kernel (input_size // 16), ceil mode
        pooled = F.avg_pool2d(self.conv2(out), 2, ceil_mode=True)
        return classify(self.classifier, pooled, features, features)


@register_model("MobileNetV2")
def mobilenetv2(num_classes: int = 100) -> MobileNetV2:
    """RepDistiller's ``mobile_half``: expansion 6, width multiplier 0.5."""
    return MobileNetV2(expansion=6, width_mult=0.5, num_classes=num_classes)
