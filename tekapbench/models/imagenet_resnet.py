"""torchvision's ImageNet ResNets (ResNet18, ResNet34), under the names of the CRD/DKD ImageNet model zoo.

They are torchvision's own classes and initialisation, so the state dict is torchvision's key for key:
torchvision's pretrained files (e.g. the ResNet34 teacher of the DKD ImageNet table, 73.31 % top-1) load as
a ``teacher_checkpoint``. Only the forward differs, to return the common output: features are the stem's
output (before the max pool) and each stage's output; pre-activation features are each stage's last
residual sum before its ReLU, computed once from the block's own layers (no layer runs twice).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from tekapbench.models.base import ModelOutput, register_model
from tekapbench.models.layers import classify


def _last_block(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision residual block's output and its residual sum before the final ReLU."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    preact = out + identity
    return F.relu(preact), preact  # not the block's in-place ReLU: preact is returned too


class ImageNetResNet(ResNet):
    def forward(self, x: torch.Tensor) -> ModelOutput:  # type: ignore[override]
        stem = self.relu(self.bn1(self.conv1(x)))  # 112x112 at 224
        x = self.maxpool(stem)
        features, preacts = [stem], [stem]
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):  # 56, 28, 14, 7
            *blocks, last = stage
            for block in blocks:
                x = block(x)
            x, preact = _last_block(last, x)
            features.append(x)
            preacts.append(preact)
        return classify(self.fc, self.avgpool(x), features, preacts)


@register_model("ResNet18")
def resnet18(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)


@register_model("ResNet34")
def resnet34(num_classes: int = 1000) -> ImageNetResNet:
    return ImageNetResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes)
