"""Variants of the embedded digits for the CPU twins of the GPU suites, built from the same images:

- ``digits_lt``: a long-tailed training split (exponential profile, imbalance factor 0.1 over 10 classes,
  LDAM-DRW's seeded selection), balanced test split: the CPU twin of CIFAR-100-LT;
- ``digits_0to4`` / ``digits_5to9``: the classes 0-4 and 5-9 (relabelled 0..4): train on one, probe
  transfer on the other, the CPU twin of CIFAR-100 -> STL-10 / TinyImageNet.
"""
from __future__ import annotations

import torch

from tekapbench.data.base import DataOptions, ImageSplits, register_dataset
from tekapbench.data.cifar100_lt import long_tail_counts, long_tail_indices
from tekapbench.data.digits import load_digits_dataset

DIGITS_LT_IMBALANCE = 0.1


def _subset(splits: ImageSplits, name: str, train_keep: torch.Tensor, test_keep: torch.Tensor,
            classes: list[int]) -> ImageSplits:
    relabel = torch.full((splits.num_classes,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    return ImageSplits(
        name=name,
        train_images=splits.train_images[train_keep].contiguous(),
        train_labels=relabel[splits.train_labels[train_keep]],
        test_images=splits.test_images[test_keep].contiguous(),
        test_labels=relabel[splits.test_labels[test_keep]],
        num_classes=len(classes),
        mean=splits.mean,
        std=splits.std,
        class_names=tuple(splits.class_names[c] for c in classes) if splits.class_names else (),
    )


@register_dataset("digits_lt", recipe="digits", num_classes=10, image_size=32,
                  description="the digits with a long-tailed training split (imbalance 0.1); no download")
def load_digits_lt(options: DataOptions) -> ImageSplits:
    digits = load_digits_dataset(options)
    head = int(torch.bincount(digits.train_labels).min())
    counts = long_tail_counts(DIGITS_LT_IMBALANCE, digits.num_classes, max_per_class=head)
    keep = torch.from_numpy(long_tail_indices(digits.train_labels.numpy(), counts))
    return _subset(digits, "digits_lt", keep, torch.arange(len(digits.test_labels)), list(range(10)))


def _classes(first: int, last: int):
    def load(options: DataOptions) -> ImageSplits:
        digits = load_digits_dataset(options)
        classes = list(range(first, last + 1))
        in_train = torch.isin(digits.train_labels, torch.tensor(classes)).nonzero().flatten()
        in_test = torch.isin(digits.test_labels, torch.tensor(classes)).nonzero().flatten()
        return _subset(digits, f"digits_{first}to{last}", in_train, in_test, classes)

    return load


for _first, _last in ((0, 4), (5, 9)):
    register_dataset(f"digits_{_first}to{_last}", recipe="digits", num_classes=5, image_size=32,
                     description=f"the digits {_first}-{_last} only (relabelled 0..4); no download")(
        _classes(_first, _last))
