"""Building blocks shared by the model families.

Blocks that end a stage return ``(out, preact)``: the activated output and the same tensor before its final
ReLU. :class:`Stage` threads such blocks and returns the last pair, so the pre-activation features of
RepDistiller's ``preact=True`` cost nothing (no layer is evaluated twice, no BatchNorm statistic is updated
twice). Helpers here add no parameters of their own, so the state-dict layouts stay those of the reference.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from tekapbench.models.base import ModelOutput


class Stage(nn.Sequential):
    """A sequence of blocks that each return ``(out, preact)``; returns the pair of the last block."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        preact = x
        for block in self:
            x, preact = block(x)
        return x, preact


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: (N, g*c, H, W) -> interleave the g groups."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> nn.Sequential:
    """Bias-free convolution followed by BatchNorm (keys ``0.weight``, ``1.*``), e.g. a projection shortcut."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def init_conv_bn_(model: nn.Module) -> None:
    """He init (fan_out) for convolutions with zero bias, unit-scale zero-shift BatchNorm.

    Equals RepDistiller's ``normal_(0, sqrt(2 / (k*k*out_channels)))`` and its ``kaiming_normal_`` variant.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def classify(
    classifier: nn.Module,
    pooled: torch.Tensor,
    features: Iterable[torch.Tensor],
    preact_features: Iterable[torch.Tensor],
) -> ModelOutput:
    """Flatten the pooled map into the embedding, apply the classifier, and package the output."""
    embedding = torch.flatten(pooled, 1)
    return ModelOutput(
        logits=classifier(embedding),
        features=tuple(features),
        preact_features=tuple(preact_features),
        embedding=embedding,
        head=classifier,
    )
