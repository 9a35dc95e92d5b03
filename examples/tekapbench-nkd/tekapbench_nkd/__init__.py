"""NKD, "Rethinking Knowledge Distillation via Cross-Entropy" (Yang et al., ICCV 2023), as a tekapbench plugin.

The loss is that of the official code, github:yzd-v/cls_KD@1e5d48f36957ee460d39d7ebc592c6cc7f8f3d66
mmcls/models/dis_losses/nkd.py (NKDLoss.forward): the target class's teacher probability times the student's
log-probability (batch mean), plus gamma * T^2 times the cross-entropy between the teacher's and the student's
softmax over the non-target classes at temperature T. The total is CE + NKD (the code's distiller adds the
loss to the student's own CE with weight 1). Defaults are the code's (temp 1.0, gamma 1.5, also its ImageNet
config configs/distillers/imagenet/res34_distill_res18_img.py); its CIFAR-100 config
configs/distillers/cifar100/res34_distill_res18_cifar.py uses temp 3.0, gamma 3.5.

Because the term reads only the teacher's logits, ``tekap = { level = "logit" }`` applies TeKAP to it, as
to every logit method: nothing here knows about TeKAP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from tekapbench.methods.base import LossTerm, MethodParams, register_method

__version__ = "0.1.0"


class NKDParams(MethodParams):
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the non-target classes")
    gamma: float = Field(1.5, gt=0, description="weight of the non-target term")


def nkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             temperature: float, gamma: float) -> torch.Tensor:
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    n = student_logits.shape[0]
    label = labels.view(n, 1)
    student_target = F.log_softmax(student_logits, dim=1).gather(1, label)
    teacher_target = F.softmax(teacher_logits, dim=1).gather(1, label).detach()
    target_loss = -(teacher_target * student_target).mean()
    # the non-target classes only, renormalised among themselves
    others = torch.ones_like(student_logits).scatter_(1, label, 0).bool()
    student_rest = student_logits[others].reshape(n, -1)
    teacher_rest = teacher_logits[others].reshape(n, -1)
    cross = (F.softmax(teacher_rest / temperature, dim=1) * F.log_softmax(student_rest / temperature, dim=1))
    return target_loss - gamma * temperature**2 * cross.sum(dim=1).mean()


@register_method("nkd", params=NKDParams, ce_weight=1.0, weight=1.0)
class NKDLoss(LossTerm):
    """Normalized KD: target-class soft weight plus normalised non-target KD (Yang et al., ICCV 2023)."""

    reads = frozenset({"logits"})

    def __init__(self, params: NKDParams, ctx=None):
        super().__init__()
        self.temperature, self.gamma = params.temperature, params.gamma

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        return nkd_loss(student.logits, teacher.logits, batch.labels, self.temperature, self.gamma)
