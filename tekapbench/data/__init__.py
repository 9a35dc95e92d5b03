"""Datasets (readers registered by name), the on-device loader and the streaming loader.

Importing this package registers the built-in datasets (one file each): ``cifar100`` and its long-tailed
variants, ``stl10``, ``tinyimagenet``, ``digits`` and its variants (held in memory), and ``imagenet``
(image files, streamed). ``tekapbench list datasets`` describes them.
"""
from tekapbench.data._files import CorruptDataError
from tekapbench.data.base import DATASETS, DataOptions, ImageSplits, Splits, load_dataset, register_dataset
from tekapbench.data.loader import Batch, DeviceLoader
from tekapbench.registry import import_submodules

import_submodules(__name__)  # each dataset file registers its reader

__all__ = [
    "ImageSplits",
    "Splits",
    "DataOptions",
    "DATASETS",
    "load_dataset",
    "register_dataset",
    "Batch",
    "DeviceLoader",
    "CorruptDataError",
]
