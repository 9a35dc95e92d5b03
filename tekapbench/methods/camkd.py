"""CA-MKD (Zhang, Chen and Wang, ICASSP 2022): confidence-aware multi-teacher knowledge distillation.

Each teacher's say is weighted, sample by sample, by how confident it is about the true label: with
``CE_k`` the cross-entropy of teacher k's prediction, ``w_k = (1 - softmax_k(CE)) / (K - 1)`` (the
weights of a sample sum to 1; a teacher that is wrong counts less). Two terms:

- logits: ``sum_{b,k} w_k * T^2 * KL(p_k || p_s) / (B * K)`` at temperature T;
- features: the student's embedding is regressed into each teacher's (``r_k``: linear map, BatchNorm,
  ReLU, one per teacher), the teacher's own classifier scores the regressed embedding against the label,
  and those cross-entropies give the weights ``v_k`` of ``sum_{b,k} v_k * mean_d (r_k(f_s) - f_k)^2 / (B * K)``.
  The ``v_k`` depend on the student and the regressors and are differentiated (the gradient also asks to
  make the regressed embedding more convincing to each teacher's classifier); the ``w_k`` are constants.

The term returns ``logits + feature_weight * features``; the objective adds ``1 * CE``.

Official source: github:Rorozhl/CA-MKD, ``helper/loops.py`` (``train_distill_multi_teacher``, branch
``ensemble_method == 'CAMKD'``: the logit term), ``distiller_zoo/CAMKD.py`` (the feature term),
``models/util.py`` (``CalWeight``, ``Embed``: the regressors), ``scripts/run.sh`` (``-r 1 -a 1 -b 50``,
three teachers, ``--nesterov``), ``train_student.py`` (``--kd_T 4``). Defaults follow that code:

- both terms are divided by ``B * K``, not by ``B``: the weights of a sample already sum to 1, so the code
  scales each term by another ``1 / K`` (``behaviour = "paper"``: divide by ``B``, the weighted sums of
  the paper's equations);
- the feature term is left out at epoch 1 (``if epoch == 1`` in the loop; ``feature_from_epoch``);
- the regressor is the code's ``Embed`` (1x1 convolution, BatchNorm, ReLU), which on a pooled
  embedding is a linear map, BatchNorm1d and ReLU;
- ``feature_weight`` 50 is the script's ``-b 50``; temperature 4 is ``--kd_T``; the CE weight is ``-r 1``.

Deliberate difference (``feature = "embedding"`` in the record): the code regresses the last stage's
feature map and runs the rest of the teacher (average pooling and classifier) on it; this regresses the
penultimate embedding, after which the rest of a teacher is exactly its classifier (``ModelOutput.head``):
the same confidence, one pooling later, for any architecture.
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
    feature_from_epoch: int = Field(2, ge=1, description="first epoch with the feature term (official: 2)")
    behaviour: Literal["official", "paper"] = Field(
        "official", description="official: both terms divided by batch x teachers; paper: by the batch only")
    feature: Literal["embedding"] = Field("embedding", description="where the student is regressed into the teachers")


def confidence_weights(logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """(K, B) weights ``(1 - softmax over teachers of CE) / (K - 1)``; each column sums to 1.

    Differentiable: the official code lets the feature term's weights carry gradient."""
    ce = torch.stack([F.cross_entropy(z.float(), labels, reduction="none") for z in logits])
    return (1 - torch.softmax(ce, dim=0)) / (len(logits) - 1)


def embedding_regressor(dim_in: int, dim_out: int) -> nn.Module:
    """The official ``Embed`` (1x1 conv, BatchNorm, ReLU) on a (batch, dim) embedding."""
    return nn.Sequential(nn.Linear(dim_in, dim_out), nn.BatchNorm1d(dim_out), nn.ReLU())


# The official recipe: CRD's (lr 0.05 at batch 64, 240 epochs, x0.1 at 150/180/210, wd 5e-4), with Nesterov
# momentum (scripts/run.sh --nesterov) and the last, incomplete batch of an epoch skipped (helper/loops.py:
# ``if input.shape[0] < opt.batch_size: continue``).
OFFICIAL_RECIPES = {"cifar100": {
    "source": "CA-MKD, github:Rorozhl/CA-MKD@c2f39a9f13c1998e9971815760364587222581ce scripts/run.sh, "
              "train_student.py, helper/loops.py",
    "nesterov": True, "drop_last": True,
}}


@register_method("camkd", params=CAMKDParams, ce_weight=1.0, weight=1.0, teachers="ensemble",
                 recipes=OFFICIAL_RECIPES)
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
        self.regressors = nn.ModuleList(embedding_regressor(ctx.student.embedding_dim, t.embedding_dim)
                                        for t in teachers)

    def _reduce(self, weighted: torch.Tensor) -> torch.Tensor:
        """Sum of the (K, B) weighted losses over the batch and the teachers, divided as the behaviour says."""
        k, b = weighted.shape
        return weighted.sum() / (b * k if self.params.behaviour == "official" else b)

    def logit_loss(self, student, teacher, labels: torch.Tensor) -> torch.Tensor:
        t = self.params.temperature
        # teachers' outputs carry no gradient: these weights are constants, as in the official loop
        weights = confidence_weights([k.logits for k in teacher], labels).detach()
        log_p_s = soft_log_probs(student.logits, t)
        kl = torch.stack([kl_per_sample(soft_log_probs(k.logits, t), log_p_s) for k in teacher]) * t**2
        return self._reduce(weights * kl)

    def feature_loss(self, student, teacher, labels: torch.Tensor) -> torch.Tensor:
        if any(k.head is None for k in teacher):
            raise ValueError("CA-MKD's feature term needs each teacher's classifier (ModelOutput.head)")
        embedding = student.embedding.float()
        regressed = [r(embedding) for r in self.regressors]
        weights = confidence_weights([k.head(x) for k, x in zip(teacher, regressed)], labels)
        mse = torch.stack([(x - k.embedding.float()).pow(2).mean(1) for x, k in zip(regressed, teacher)])
        return self._reduce(weights * mse)

    def forward(self, student, teacher, batch, epoch, *, primary=True, features: bool = True):
        loss = self.logit_loss(student, teacher, batch.labels)
        if features and self.params.feature_weight and epoch >= self.params.feature_from_epoch:
            loss = loss + self.params.feature_weight * self.feature_loss(student, teacher, batch.labels)
        return loss

    def synthetic(self, student, teacher, batch, epoch, perturbed):
        # logit-level TeKAP leaves the embeddings alone: the feature term counts once, on the real teachers
        # (and the regressors' BatchNorm statistics see each batch once)
        return self(student, teacher, batch, epoch, primary=False, features="embedding" in perturbed)
