"""The model zoo: importing this package registers every architecture in ``MODELS``.

CIFAR networks of the CRD/RepDistiller code base (which DKD's mdistiller copies), with identical state-dict
layouts so the public ``<arch>_vanilla/ckpt_epoch_240.pth`` teachers load with ``strict=True``; plus two tiny
ResNets (``resnet8_tiny``, ``resnet20_tiny``) for CPU smoke tests. Every model returns a :class:`ModelOutput`.
"""
from tekapbench.models import mobilenetv2, resnet, resnetv2, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: F401
from tekapbench.models.base import MODELS, LogitsOnly, ModelOutput, create_model, register_model

__all__ = ["MODELS", "LogitsOnly", "ModelOutput", "create_model", "register_model"]
