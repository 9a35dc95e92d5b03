"""The fast input path (as in airbench): the split lives on the training device, augmented in batch there.

A :class:`DeviceLoader` moves a split's uint8 images to the device once. Each epoch it draws the whole
epoch's randomness up front (a permutation, crop offsets, flip flags: a handful of kernel launches, no host
synchronisation) and then, per batch, gathers the crops with one ``index_select``, flips, converts to float
and normalizes: no per-image Python loop, no PIL, no worker processes.

Augmentation is exactly torchvision's ``RandomCrop(H, padding=p)`` + ``RandomHorizontalFlip(0.5)`` on a PIL
image: zero (black) padding in pixel space before normalization, so padded pixels become ``-mean/std``; a
crop offset (dy, dx) uniform in ``0..2p`` each; flip with probability 1/2.

How the crop is gathered: the training images are stored zero-padded, ``(N, C, H+2p, W+2p)`` uint8
(1.56x the memory of 32x32 images at p=4), and the flat buffer is viewed with ``unfold`` as the (overlapping)
windows of W consecutive bytes. A cropped image is then C*H such windows, whose start positions are a
simple sum, so one ``index_select`` (a row copy, much faster than element-wise advanced indexing) yields the
whole batch of crops. Flips: the batch and its mirror image are concatenated and ``index_select`` picks, per
image, the plain or the mirrored copy (faster than a broadcast ``torch.where`` on CPU, and sync-free).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Batch:
    images: torch.Tensor  # float32, normalized, (B, C, H, W), on device (channels_last if requested)
    labels: torch.Tensor  # int64 (B,)
    indices: torch.Tensor  # int64 (B,): positions of these images in the split (CRD's memory bank)
    # other views of the same images, by name: (student output, teacher output(s)), filled by the trainer
    views: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class EpochPlan:
    """Everything random about one training epoch, all on the loader's device."""

    order: torch.Tensor  # int64 (N,): the permutation; batch k holds order[k*B:(k+1)*B]
    dy: torch.Tensor  # int64 (N,): crop row offset into the padded image, 0..2p, for order[i]
    dx: torch.Tensor  # int64 (N,): crop column offset, 0..2p
    flip: torch.Tensor  # bool (N,): mirror horizontally after the crop


def draw_epoch_plan(
    n: int,
    *,
    padding: int,
    flip: bool,
    generator: torch.Generator | None,
    device: torch.device,
) -> EpochPlan:
    """Draw, in this order, the permutation, the row offsets, the column offsets and the flip flags.

    The order of draws is part of the contract: the tests replay it to check the loader's batches against a
    per-image reference.
    """
    order = torch.randperm(n, generator=generator, device=device)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    if flip:
        flips = torch.rand(n, generator=generator, device=device) < 0.5
    else:
        flips = torch.zeros(n, dtype=torch.bool, device=device)
    return EpochPlan(order=order, dy=dy, dx=dx, flip=flips)


def _as_channel_tensor(values: Sequence[float], channels: int, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() != channels:
        raise ValueError(f"{name} needs one value per channel ({channels}), got {t.numel()}")
    return t.to(device).view(1, channels, 1, 1)


class Normalizer:
    """uint8 pixels -> float32 ``(x / 255 - mean) / std`` on the device, computed as ``x * scale + shift``
    (the constants in float64, applied in float32)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int, device: torch.device):
        mean_t = _as_channel_tensor(mean, channels, "mean", device)
        std_t = _as_channel_tensor(std, channels, "std", device)
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.scale = (1.0 / (255.0 * std_t)).float()
        self.shift = (-mean_t / std_t).float()

    def __call__(self, pixels: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        if channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)  # cheap on uint8; kept below
        return pixels.to(torch.float32).mul_(self.scale).add_(self.shift)


class DeviceLoader:
    """Batches of a whole split kept on ``device``; augmentation (train mode) computed there in batch.

    ``images`` uint8 (N, C, H, W) and ``labels`` int64 (N,), on any device: they are moved once, here.
    Train mode: a fresh permutation every epoch, RandomCrop(H, padding=crop_padding) with zero padding and a
    horizontal flip with p = 0.5 (if ``flip``), all drawn from the generator passed to :meth:`epoch`.
    Eval mode: the split's order, no augmentation.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        crop_padding: int = 4,
        flip: bool = True,
        drop_last: bool = False,
        channels_last: bool = False,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.crop_padding = int(crop_padding) if train else 0
        self.flip = bool(flip) and self.train
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self.num_images, channels, self.height, self.width = (int(s) for s in images.shape)

        self._normalizer = Normalizer(mean, std, channels, self.device)

        self.labels = labels.to(device=self.device, dtype=torch.int64)
        images = images.to(self.device)
        if self.train:
            p = self.crop_padding
            store = F.pad(images, (p, p, p, p)) if p else images.contiguous()  # zero (black) padding
            self._store = store
            ph, pw = self.height + 2 * p, self.width + 2 * p
            # Overlapping windows of `width` bytes over the flat padded buffer: row k = flat[k : k + width].
            self._windows = store.view(-1).unfold(0, self.width, 1)
            self._image_stride = channels * ph * pw
            self._padded_width = pw
            # Start offset of output row (c, r) relative to the crop's top-left corner: (1, C, H).
            self._row_offsets = (
                torch.arange(channels, device=self.device).view(1, channels, 1) * (ph * pw)
                + torch.arange(self.height, device=self.device).view(1, 1, self.height) * pw
            )
        else:
            self._store = images.contiguous()
        self.channels = channels

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_images // self.batch_size
        return math.ceil(self.num_images / self.batch_size)

    def raw_images(self, indices: torch.Tensor) -> torch.Tensor:
        """The un-augmented uint8 images (B, C, H, W) at ``indices`` of the split (MLKD's strong view
        augments the original image, not the weak view)."""
        images = self._store.index_select(0, indices)
        p = self.crop_padding
        return images[:, :, p:p + self.height, p:p + self.width] if p else images

    def _normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._normalizer(pixels, self.channels_last)

    def _crop_flip(self, starts: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) crops whose top-left pixel sits at flat offset ``starts`` of the padded store."""
        rows = (starts.view(-1, 1, 1) + self._row_offsets).view(-1)
        crops = self._windows.index_select(0, rows).view(-1, self.channels, self.height, self.width)
        if self.flip:
            n = crops.shape[0]
            both = torch.cat([crops, crops.flip(3)])
            pick = torch.arange(n, device=self.device) + flips.to(torch.int64) * n
            crops = both.index_select(0, pick)
        return crops

    def epoch(self, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One pass over the split. ``generator`` must live on the loader's device (None: torch's default)."""
        n, b = self.num_images, self.batch_size
        stop = (n // b) * b if self.drop_last else n
        if not self.train:
            for s in range(0, stop, b):
                e = min(s + b, n)
                yield Batch(
                    images=self._normalize(self._store[s:e]),
                    labels=self.labels[s:e],
                    indices=torch.arange(s, e, device=self.device),
                )
            return
        if generator is not None and generator.device.type != self.device.type:
            raise ValueError(
                f"the generator lives on {generator.device} but the loader on {self.device}; "
                f"create it with torch.Generator(device={str(self.device)!r})"
            )
        plan = draw_epoch_plan(n, padding=self.crop_padding, flip=self.flip, generator=generator, device=self.device)
        starts = plan.order * self._image_stride + plan.dy * self._padded_width + plan.dx
        for s in range(0, stop, b):
            e = min(s + b, n)
            index = plan.order[s:e]
            yield Batch(
                images=self._normalize(self._crop_flip(starts[s:e], plan.flip[s:e])),
                labels=self.labels.index_select(0, index),
                indices=index,
            )
