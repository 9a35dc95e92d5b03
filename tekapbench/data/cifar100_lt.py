"""Long-tailed CIFAR-100 (CIFAR-100-LT), as built by LDAM-DRW (Cao et al., 2019), from the CIFAR-100 files.

Training split: class ``c`` (0..99; class 0 is the head) keeps ``int(500 * f ** (c / 99))`` of its 500
training images, where ``f`` is the imbalance factor (smallest class / largest class). Totals: f = 0.01 ->
10,847 images, f = 0.02 -> 12,608, f = 0.1 -> 19,573. The test split is CIFAR-100's, unchanged (balanced,
100 per class), so accuracy on it is also reported per group: many (> 100 training images), medium (20..100)
and few (< 20) shots; see :func:`shot_groups`.

Which images a class keeps: one ``numpy.random.RandomState(SEED)`` with ``SEED = 0``; for each class in
order 0..99, the indices of its training images (in file order) are shuffled in place with that one stream
and the first ``count`` are kept. This is exactly LDAM-DRW's ``IMBALANCECIFAR100.gen_imbalanced_data``
(``np.random.seed(0)`` then ``np.random.shuffle`` per class: numpy's global generator is a RandomState),
so the same images are selected. The kept indices are then sorted, so the split keeps CIFAR-100's file order
(LDAM-DRW groups them by class; the training loader reshuffles every epoch, so only the set matters).

Files, download option and errors are those of the ``cifar100`` reader (``<root>/cifar-100-python/``): its
loading function is reused as is. ``mean``/``std`` are the distillation code bases' CIFAR-100 constants,
not recomputed on the long-tailed subset, so a network sees the same normalisation on both. LDAM-DRW's
own code (github:kaidic/LDAM-DRW, cifar_train.py) normalises CIFAR-100 with CIFAR-10's statistics,
(0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010); tekapbench does not, so that one teacher serves both.
"""
from __future__ import annotations

import numpy as np
import torch

from tekapbench.data._files import CorruptDataError
from tekapbench.data.base import DataOptions, ImageSplits, register_dataset
from tekapbench.data.cifar100 import NUM_CLASSES, load_cifar100

MAX_PER_CLASS = 500  # CIFAR-100 has 500 training images per class; tests lower it for small fixtures
SEED = 0
IMBALANCE_FACTORS = {"cifar100_lt100": 0.01, "cifar100_lt50": 0.02, "cifar100_lt10": 0.1}
MANY_SHOT_ABOVE = 100  # many: > 100 training images
FEW_SHOT_BELOW = 20  # few: < 20; medium: 20..100


def long_tail_counts(imbalance_factor: float, num_classes: int = 100, max_per_class: int = 500) -> list[int]:
    """Training images kept per class: ``int(max_per_class * f ** (c / (num_classes - 1)))`` for class c.

    ``long_tail_counts(0.01)`` sums to 10,847; class 0 keeps ``max_per_class``, the last class
    ``int(max_per_class * f)``.
    """
    if isinstance(imbalance_factor, bool) or not 0 < imbalance_factor <= 1:
        raise ValueError(f"imbalance_factor must lie in (0, 1], got {imbalance_factor!r}")
    if num_classes < 1 or max_per_class < 0:
        raise ValueError(f"need num_classes >= 1 and max_per_class >= 0, got {num_classes}, {max_per_class}")
    if num_classes == 1:
        return [int(max_per_class)]
    return [int(max_per_class * imbalance_factor ** (c / (num_classes - 1))) for c in range(num_classes)]


def shot_groups(train_counts: list[int]) -> dict[str, list[int]]:
    """Classes by number of training images: ``many`` (> 100), ``medium`` (20..100), ``few`` (< 20).

    At f = 0.01 the groups hold 35/35/30 classes; at f = 0.1, 69/31/0 (an empty group's accuracy is
    undefined: report it as NaN, not 0).
    """
    groups: dict[str, list[int]] = {"many": [], "medium": [], "few": []}
    for c, n in enumerate(train_counts):
        key = "many" if n > MANY_SHOT_ABOVE else "few" if n < FEW_SHOT_BELOW else "medium"
        groups[key].append(c)
    return groups


def long_tail_indices(labels: np.ndarray, counts: list[int], seed: int = SEED) -> np.ndarray:
    """Sorted indices into ``labels`` that keep ``counts[c]`` images of class c (LDAM-DRW's selection).

    Raises :class:`ValueError` if a class has fewer images than it should keep.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    kept: list[np.ndarray] = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n:
            raise ValueError(f"class {c} has {len(idx)} images, fewer than the {n} it should keep")
        rng.shuffle(idx)
        kept.append(idx[:n])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def make_long_tailed(splits: ImageSplits, imbalance_factor: float, name: str,
                     max_per_class: int = MAX_PER_CLASS) -> ImageSplits:
    """``splits`` with its training split reduced to the long-tailed profile; the test split is kept."""
    counts = long_tail_counts(imbalance_factor, splits.num_classes, max_per_class)
    try:
        keep = long_tail_indices(splits.train_labels.numpy(), counts)
    except ValueError as exc:
        raise CorruptDataError(
            f"{name}: the CIFAR-100 training split should hold {max_per_class} images per class, but {exc}. "
            "Delete the cifar-100-python folder and download it again."
        ) from exc
    keep_t = torch.from_numpy(keep)
    return ImageSplits(
        name=name,
        train_images=splits.train_images[keep_t].contiguous(),
        train_labels=splits.train_labels[keep_t].contiguous(),
        test_images=splits.test_images,
        test_labels=splits.test_labels,
        num_classes=splits.num_classes,
        mean=splits.mean,
        std=splits.std,
        class_names=splits.class_names,
    )


def _register(name: str, factor: float) -> None:
    total = sum(long_tail_counts(factor))

    @register_dataset(
        name,
        recipe="cifar100",
        num_classes=NUM_CLASSES,
        image_size=32,
        description=f"long-tailed CIFAR-100 (LDAM-DRW), imbalance factor {factor}: {total:,} train / "
        "10,000 balanced test, from <root>/cifar-100-python/",
    )
    def load(options: DataOptions) -> ImageSplits:
        # MAX_PER_CLASS is looked up at call time, so tests can lower it for a small fixture.
        return make_long_tailed(load_cifar100(options), factor, name, MAX_PER_CLASS)

    load.__name__ = f"load_{name}"


for _name, _factor in IMBALANCE_FACTORS.items():
    _register(_name, _factor)
