"""A strongly augmented view of a training batch, made on the batch's device (MLKD's second view).

From the weak view (random crop and flip, normalized), per image: brightness, contrast and saturation
each scaled by a factor in [1 - jitter, 1 + jitter], grayscale with probability 0.2, then a square
cutout of half the image side at a random centre, filled with the dataset mean. Every draw comes from
the generator passed in, so a run's strong views repeat exactly.
"""
from __future__ import annotations

from typing import Sequence

import torch

GRAY = (0.299, 0.587, 0.114)


def _uniform(shape, low: float, high: float, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device) * (high - low) + low


def strong_view(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                generator: torch.Generator | None = None, *, jitter: float = 0.4,
                grayscale: float = 0.2) -> torch.Tensor:
    b, c, h, w = images.shape
    device = images.device
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, c, 1, 1)
    x = images.float() * s + m  # back to [0, 1]
    x = x * _uniform((b, 1, 1, 1), 1 - jitter, 1 + jitter, generator, device)
    centre = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - centre) * _uniform((b, 1, 1, 1), 1 - jitter, 1 + jitter, generator, device) + centre
    if c == 3:
        gray = (x * torch.tensor(GRAY, device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * _uniform((b, 1, 1, 1), 1 - jitter, 1 + jitter, generator, device) + gray
        to_gray = torch.rand((b, 1, 1, 1), generator=generator, device=device) < grayscale
        x = torch.where(to_gray, gray.expand_as(x), x)
    x = x.clamp(0, 1)
    side = max(h // 2, 1)
    cy = torch.randint(0, h, (b, 1, 1), generator=generator, device=device)
    cx = torch.randint(0, w, (b, 1, 1), generator=generator, device=device)
    rows = torch.arange(h, device=device).view(1, h, 1)
    cols = torch.arange(w, device=device).view(1, 1, w)
    cut = ((rows - cy).abs() * 2 < side) & ((cols - cx).abs() * 2 < side)
    x = torch.where(cut.unsqueeze(1), m.expand(b, c, h, w), x)
    out = (x - m) / s
    return out.contiguous(memory_format=torch.channels_last) if images.is_contiguous(
        memory_format=torch.channels_last) and not images.is_contiguous() else out
