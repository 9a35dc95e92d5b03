"""Augmentations that make the extra views of a batch some methods compare on (MLKD's strong view).

A method's loss term names the views it needs and the augmentation each gets by default
(``LossTerm.views``); a suite may choose another (``[recipe] views = { strong = "..." }``); the run's
recipe stores the resolved choice. Each augmentation takes the batch's original uint8 images (B, C, H, W)
on the device, the dataset's mean and std and the view's own generator, and returns normalized float32
images. Adding one is a function with ``@VIEWS.register("name")``.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import torch

from tekapbench.errors import UsageError
from tekapbench.registry import Registry


class ViewAugmentation(Protocol):
    def __call__(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                 generator: torch.Generator | None, *, channels_last: bool = False) -> torch.Tensor: ...


VIEWS: Registry[ViewAugmentation] = Registry("view augmentation")


def raw_images(loader, indices: torch.Tensor, view: str) -> torch.Tensor:
    """The un-augmented uint8 images at ``indices`` of a training loader, the input of every view."""
    get = getattr(loader, "raw_images", None)
    if get is None:
        raise UsageError(
            f"the {view!r} view (MLKD's strong view, for one) is made from the original training images, which "
            f"need an in-memory dataset such as CIFAR; {type(loader).__name__} streams them from disk")
    return get(indices)
