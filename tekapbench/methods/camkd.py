"""CA-MKD (Zhang, Chen and Wang, ICASSP 2022): confidence-aware multi-teacher knowledge distillation.

Each teacher's say is weighted, sample by sample, by how confident it is about the true label: with
``CE_k`` the cross-entropy of teacher k's prediction, ``w_k = (1 - softmax_k(CE)) / (K - 1)`` (the
weights of a sample sum to 1; a teacher that is wrong counts less). Two terms:

- logits: ``sum_k w_k * T^2 * KL(p_k || p_s)`` at temperature T, batch mean;
- features: the student's embedding is regressed into each teacher's (a linear map per teacher), the
  teacher's own classifier scores the regressed embedding against the label, and those cross-entropies
  give the weights ``v_k`` of ``sum_k v_k * ||r_k(f_s) - f_k||^2`` (mean over feature dimensions).

Where the public code regresses an intermediate stage and runs the rest of the teacher on it, this
regresses the penultimate embedding, after which the rest of a teacher is exactly its classifier: the
same confidence, one layer later, for any architecture (``feature = "embedding"`` in the record).
The confidence weights are not differentiated (they weigh the loss; they are not a goal).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from tekapbench.methods.base import DistillContext, LossTerm, MethodParams, register_method
from tekapbench.methods.base import kl_per_sample, soft_log_probs


class CAMKDParams(MethodParams):
    temperature: float = Field(4.0, gt=0)
    feature_weight: float = Field(50.0, ge=0, description="weight of the feature term beside the logit term")
    feature: Literal["embedding"] = Field("embedding", description="where the student is regressed into the teachers")


def confidence_weights(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """(K, B) weights ``(1 - softmax over teachers of CE) / (K - 1)``; each column sums to 1."""
    ce = torch.stack([F.cross_entropy(z.float(), labels, reduction="none") for z in logits])
    return ((1 - torch.softmax(ce, dim=0)) / (len(logits) - 1)).detach()


@register_method("camkd", params=CAMKDParams, ce_weight=1.0, weight=1.0, teachers="ensemble")
class CAMKDLoss(LossTerm):
    """Several teachers, each weighted per sample by its confidence in the true label."""

    reads = frozenset({"logits", "embedding"})
    multi_teacher = True

    def __init__(self, params: CAMKDParams, ctx: DistillContext):
        super().__init__()
        teachers = ctx.all_teachers
        if len(teachers) < 2:
            raise ValueError("CA-MKD weighs several teachers against each other: it needs at least 2")
        self.params = params
        self.regressors = nn.ModuleList(nn.Linear(ctx.student.embedding_dim, t.embedding_dim) for t in teachers)

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        t = self.params.temperature
        labels = batch.labels
        logit_weights = confidence_weights([k.logits for k in teacher], labels)
        log_p_s = soft_log_probs(student.logits, t)
        kl = torch.stack([kl_per_sample(soft_log_probs(k.logits, t), log_p_s) for k in teacher])
        logit_loss = (logit_weights * kl).sum(0).mean() * t**2
        if not self.params.feature_weight:
            return logit_loss
        embedding = student.embedding.float()
        regressed = [r(embedding) for r in self.regressors]
        scored = [k.head(x) if k.head is not None else None for k, x in zip(teacher, regressed)]
        if any(s is None for s in scored):
            raise ValueError("CA-MKD's feature term needs each teacher's classifier (ModelOutput.head)")
        feature_weights = confidence_weights(scored, labels)
        mse = torch.stack([(x - k.embedding.float()).pow(2).mean(1) for x, k in zip(regressed, teacher)])
        return logit_loss + self.params.feature_weight * (feature_weights * mse).sum(0).mean()
