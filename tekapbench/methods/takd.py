"""TAKD (Mirzadeh et al., AAAI 2020): knowledge distillation through a chain of teacher assistants.

Each assistant is distilled from the network before it in the chain, the student from the last assistant,
every link with the same loss. The chain is the topology of its teachers, which the suite's pair declares
(``assistants = [...]``) and the planner turns into runs, each assistant trained once and shared.

Official code: github:imirzadeh/Teacher-Assistant-Knowledge-Distillation, train.py (TrainManager.train):
``(1 - lambda) * CE + lambda * T^2 * nn.KLDivLoss()(log_softmax(s / T), softmax(t / T))``. lambda is the
registered weight (ce_weight = 1 - lambda, weight = lambda); the term is the part after lambda.

- ``behaviour = "official"`` (default): ``nn.KLDivLoss()`` keeps PyTorch's default reduction, the mean over
  every element, so the KL is the batch mean divided by the number of classes as well (1/100 on CIFAR-100).
- ``behaviour = "paper"``: the paper's ``tau^2 KL(p_t || p_s)``, summed over classes, batch mean (KD's term).

The code leaves lambda and T to an NNI search (search_space.json: lambda in 0.05..1.0 by 0.05, T in
{1, 2, 5, 10, 15, 20}) and its README fixes neither. The defaults, lambda = 0.15 and T = 5, are the ones the
author gave for resnet110 -> resnet20 -> resnet8 on CIFAR-100 (repository issue #7, the student's link).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from tekapbench.methods.base import LossTerm, MethodParams, kl_per_sample, register_method, soft_log_probs


class TAKDParams(MethodParams):
    temperature: float = Field(5.0, gt=0, description="T (the author's T_student for the CIFAR-100 chain)")
    behaviour: Literal["official", "paper"] = Field(
        "official", description="official: KL averaged over classes too (nn.KLDivLoss() default); paper: batch mean")


def takd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
              behaviour: str = "official") -> torch.Tensor:
    """``T^2 * KL(p_t || p_s)`` averaged over the batch; "official" also averages over the classes."""
    per_sample = kl_per_sample(soft_log_probs(teacher_logits, temperature), soft_log_probs(student_logits, temperature))
    loss = per_sample.mean() * temperature**2
    if behaviour == "official":
        loss = loss / student_logits.shape[1]  # reduction 'mean' divides by batch * classes
    return loss


# The official recipe as the repository runs it (config.yml: --epochs 160; train.py's argument defaults,
# data_loader.get_cifar, adjust_learning_rate): 160 epochs, batch 128, SGD momentum 0.9, weight decay 1e-4,
# no augmentation (crop=False). adjust_learning_rate tests ``epoch < int(epoch / 2.0)``, never true, so a
# ResNet student trains at 0.01 until 3/4 of the epochs, then at 0.001: that is the code's behaviour and
# the default here (the schedule it meant, 0.1 with x0.1 at 1/2 and 3/4, is ``lr = 0.1, milestones =
# [80, 120]`` in a suite's [recipe]). Every student whose name does not start with "resnet" counts as a
# plain CNN there (model_factory.is_resnet) and trains at a constant 0.01.
PLAIN_CNN = {"lr": 0.01, "milestones": []}
NOT_RESNETS = ("MobileNetV2", "ShuffleV1", "ShuffleV2", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
               "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2")  # the zoo's architectures is_resnet rejects
OFFICIAL_RECIPES = {"cifar100": {
    "source": "TAKD, github:imirzadeh/Teacher-Assistant-Knowledge-Distillation@"
              "0f8168f4e7223134361cdd411eba0ab3b1123e29 config.yml, train.py, data_loader.py",
    "epochs": 160, "batch_size": 128, "lr": 0.01, "lr_batch_size": 128, "weight_decay": 1e-4,
    "milestones": [120], "lr_decay": 0.1, "crop_padding": 0, "flip": False,
    "by_arch": {arch: PLAIN_CNN for arch in NOT_RESNETS},
}}


@register_method("takd", params=TAKDParams, ce_weight=0.85, weight=0.15, teachers="chain",
                 description="KD along a chain of teacher assistants", recipes=OFFICIAL_RECIPES)
class TAKDLoss(LossTerm):
    """TAKD's distillation term, ``T^2 * KL`` at temperature T, for every link of the chain."""

    reads = frozenset({"logits"})

    def __init__(self, params: TAKDParams, ctx=None):
        super().__init__()
        self.temperature = params.temperature
        self.behaviour = params.behaviour

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        return takd_loss(student.logits, teacher.logits, self.temperature, self.behaviour)
