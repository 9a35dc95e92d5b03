"""Datasets (readers registered by name) and the on-device loader.

Importing this package registers the built-in datasets: ``cifar100`` (files under a root folder, optional
download) and ``digits`` (bundled with scikit-learn, no download).
"""
from tekapbench.data._files import CorruptDataError
from tekapbench.data.base import DATASETS, DataOptions, ImageSplits, load_dataset, register_dataset
from tekapbench.data.loader import Batch, DeviceLoader
from tekapbench.registry import import_submodules

import_submodules(__name__)  # each dataset file registers its reader

__all__ = [
    "ImageSplits",
    "DataOptions",
    "DATASETS",
    "load_dataset",
    "register_dataset",
    "Batch",
    "DeviceLoader",
    "CorruptDataError",
]
