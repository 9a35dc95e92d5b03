"""The model zoo: importing this package registers every architecture in ``MODELS``.

CIFAR networks of the CRD/RepDistiller code base (which DKD's mdistiller copies), with identical state-dict
layouts so the public ``<arch>_vanilla/ckpt_epoch_240.pth`` teachers load with ``strict=True``; plus two tiny
ResNets (``resnet8_tiny``, ``resnet20_tiny``) for CPU smoke tests; torchvision's ImageNet ResNet18/34 with
torchvision's layout; and every classification network of torchvision and timm by name,
``torchvision.<name>`` and ``timm.<name>`` (models/external.py; timm is an optional extra, imported only
when such a name is asked for). Every model returns a :class:`ModelOutput`.
"""
from tekapbench.models.base import MODELS, LogitsOnly, ModelOutput, create_model, register_model
from tekapbench.registry import import_submodules

import_submodules(__name__)  # each model file registers its architectures

__all__ = ["MODELS", "LogitsOnly", "ModelOutput", "create_model", "register_model"]
