"""KD (Hinton et al., 2015): T^2 * KL(p_T || p_S) at temperature T, batch mean."""
from __future__ import annotations

import torch
from pydantic import Field

from tekapbench.methods.base import LossTerm, MethodParams, kl_per_sample, register_method, soft_log_probs


class KDParams(MethodParams):
    temperature: float = Field(4.0, gt=0)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    per_sample = kl_per_sample(soft_log_probs(teacher_logits, temperature), soft_log_probs(student_logits, temperature))
    return per_sample.mean() * temperature**2


@register_method("kd", params=KDParams, ce_weight=0.1, weight=0.9)
class KDLoss(LossTerm):
    """Logit distillation with a softened KL divergence."""

    reads = frozenset({"logits"})

    def __init__(self, params: KDParams, ctx=None):
        super().__init__()
        self.temperature = params.temperature

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        return kd_loss(student.logits, teacher.logits, self.temperature)
