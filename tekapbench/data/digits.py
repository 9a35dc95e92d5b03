"""The embedded default dataset: scikit-learn's bundled handwritten digits, as 32x32 RGB images.

Needs no download, no network and no files of ours: ``sklearn.datasets.load_digits`` ships with
scikit-learn (1,797 images of 8x8 pixels, values 0..16, 10 classes). Small enough to train a few epochs on a
CPU in seconds, so examples and end-to-end tests run anywhere.

Conversion, fully deterministic (float64 arithmetic, then rounding):

- scale 0..16 to 0..255;
- upsample 8x8 to 32x32 **bilinearly** (``align_corners=False``): nearest would give 4x4 blocks whose hard
  steps the 3x3 convolutions of CIFAR networks would learn as artefacts; bilinear strokes look more like the
  natural images the recipe (RandomCrop with padding 4, flips) was designed for;
- replicate the grey channel to 3 channels (the CIFAR networks take RGB).

Split: a stratified 80/20 split, per class: the class's images are permuted with one
``numpy.random.RandomState(0)`` (a stream numpy keeps stable across versions), the first ``round(0.2 * n)``
go to the test split, and each split keeps the original order. Written out rather than delegated to
scikit-learn's ``train_test_split`` so the split cannot change with its version. ``mean``/``std`` are
computed on the training split. ``options.root`` and ``options.download`` are ignored; nothing is cached.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tekapbench.data.base import DataOptions, ImageSplits, register_dataset

SIZE = 32
TEST_FRACTION = 0.2
SEED = 0


def _to_rgb32(images: np.ndarray) -> torch.Tensor:
    """(N, 8, 8) values 0..16 -> uint8 (N, 3, 32, 32)."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float64))[:, None] * (255.0 / 16.0)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = x.round().clamp_(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1).contiguous()


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), each sorted; per class ``round(test_fraction * n)`` go to test."""
    rng = np.random.RandomState(seed)
    test: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        test.append(rng.permutation(members)[: int(round(test_fraction * len(members)))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)  # sorted
    return train_idx, test_idx


@register_dataset(
    "digits",
    recipe="digits",
    num_classes=10,
    image_size=32,
    description="scikit-learn's bundled handwritten digits (1,797 images, 10 classes) as 32x32 RGB; "
    "no download",
)
def load_digits_dataset(options: DataOptions) -> ImageSplits:  # noqa: ARG001 - root/download unused
    from sklearn.datasets import load_digits

    bunch = load_digits()
    labels = np.asarray(bunch.target, dtype=np.int64)
    images = _to_rgb32(bunch.images)
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SEED)
    train_images = images[torch.from_numpy(train_idx)]
    pixels = train_images[:, 0].to(torch.float64) / 255.0  # all three channels are equal
    mean = float(pixels.mean())
    std = float(pixels.std(unbiased=False))
    return ImageSplits(
        name="digits",
        train_images=train_images,
        train_labels=torch.from_numpy(labels[train_idx]),
        test_images=images[torch.from_numpy(test_idx)],
        test_labels=torch.from_numpy(labels[test_idx]),
        num_classes=10,
        mean=(mean, mean, mean),
        std=(std, std, std),
        class_names=tuple(str(name) for name in bunch.target_names),
    )
