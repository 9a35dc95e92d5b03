"""ImageNet (ILSVRC-2012): 1,281,167 training and 50,000 validation images, 1000 classes, streamed from files.

Expected under the data root as ``imagenet/train/<wnid>/*.JPEG`` and ``imagenet/val/<wnid>/*.JPEG`` (the
validation images sorted into class folders), the layout the CRD/DKD code bases read. Not downloadable:
it needs an account at image-net.org.
"""
from __future__ import annotations

from pathlib import Path

from tekapbench.data.base import DataOptions, register_dataset
from tekapbench.data.imagefolder import FolderSplits, read_imagefolder

FOLDER = "imagenet"
NUM_CLASSES = 1000
SIZE = 224
PUBLISHED = (1_281_167, 50_000)  # ILSVRC-2012 training and validation images
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
HOW_TO_GET = (
    "Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org (an account is "
    "needed), extract the training archive's per-class tars into train/<wnid>/, and sort the validation "
    "images into val/<wnid>/ (e.g. with the valprep.sh script of the PyTorch ImageNet example)."
)


@register_dataset(
    "imagenet",
    recipe="imagenet",
    num_classes=NUM_CLASSES,
    image_size=SIZE,
    files=True,
    description="ImageNet ILSVRC-2012 (1.28 M train / 50,000 val as test, 1000 classes), streamed from "
    "<root>/imagenet/{train,val}/<wnid>/ with RandomResizedCrop(224) (no download)",
)
def load_imagenet(options: DataOptions) -> FolderSplits:
    note = "It cannot be downloaded automatically (`download = true` does not apply to it). " if options.download else ""
    return read_imagefolder(Path(options.root) / FOLDER, name="ImageNet", num_classes=NUM_CLASSES, mean=MEAN,
                            std=STD, image_size=SIZE, workers=options.workers, how_to_get=note + HOW_TO_GET,
                            published=PUBLISHED)
