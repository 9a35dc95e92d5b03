"""VGG with BatchNorm for CIFAR (no FC stack), the layout of RepDistiller's ``models/vgg.py`` (``vgg*_bn``).

Five conv blocks (``block0`` ... ``block4``) of conv-BN-ReLU layers, the last ReLU of each block applied
outside it so the block output is its pre-activation. 2x2 max pools follow blocks 0-2; on 32x32 inputs
blocks 3 and 4 both run at 4x4 (the reference pools after block 3 only for 64x64 inputs). A global average
pool and ``classifier`` follow. Features: each block's activated output; pre-activation features: the same
before that ReLU (for block 0, the activated output, as in the reference).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.models.base import ModelOutput, register_model
from tekapbench.models.layers import classify, init_conv_bn_

_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _conv_block(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """conv-BN-ReLU for each width, without the final ReLU (keys 0, 1, 3, 4, ... as in the reference)."""
    layers: list[nn.Module] = []
    for width in widths:
        conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        layers += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, config: Sequence[Sequence[int]], num_classes: int = 100):
        super().__init__()
        if len(config) != 5:
            raise ValueError(f"VGG config must give 5 blocks, got {len(config)}")
        in_channels = 3
        blocks = []
        for widths in config:
            blocks.append(_conv_block(in_channels, widths))
            in_channels = widths[-1]
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.classifier = nn.Linear(in_channels, num_classes)
        init_conv_bn_(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        f0 = F.relu(self.block0(x))  # 32x32
        p1 = self.block1(F.max_pool2d(f0, 2))  # 16x16
        f1 = F.relu(p1)
        p2 = self.block2(F.max_pool2d(f1, 2))  # 8x8
        f2 = F.relu(p2)
        p3 = self.block3(F.max_pool2d(f2, 2))  # 4x4
        f3 = F.relu(p3)
        p4 = self.block4(f3)  # 4x4
        f4 = F.relu(p4)
        pooled = F.adaptive_avg_pool2d(f4, 1)
        return classify(self.classifier, pooled, (f0, f1, f2, f3, f4), (f0, p1, p2, p3, p4))


@register_model("vgg8")
def vgg8(num_classes: int = 100) -> VGG:
    return VGG(_CONFIGS["vgg8"], num_classes)


@register_model("vgg11")
def vgg11(num_classes: int = 100) -> VGG:
    return VGG(_CONFIGS["vgg11"], num_classes)


@register_model("vgg13")
def vgg13(num_classes: int = 100) -> VGG:
    return VGG(_CONFIGS["vgg13"], num_classes)


@register_model("vgg16")
def vgg16(num_classes: int = 100) -> VGG:
    return VGG(_CONFIGS["vgg16"], num_classes)


@register_model("vgg19")
def vgg19(num_classes: int = 100) -> VGG:
    return VGG(_CONFIGS["vgg19"], num_classes)
