"""MLKD (Jin, Wang and Lin, CVPR 2023): multi-level logit distillation.

Predictions are compared at three levels, each at several temperatures ("prediction augmentation",
T in {2, 3, 4, 5, 6}) and on two views of the batch, the usual weak one and a strong one
(tekapbench/data/strong.py):

- instance: T^2 * KL(p_t || p_s) per sample;
- batch: the B x B Gram matrix of predictions ``P P^T``, squared difference, / B;
- class: the C x C class-correlation matrix ``P^T P``, squared difference, / C.

Confidence masking, as the paper describes it: only samples whose teacher confidence (max probability
on the weak view) is at or above the batch's ``confidence_percentile`` count for the instance and batch
levels, and only classes whose summed teacher probability is at or above that percentile for the class
level. The strong view adds its own cross-entropy (``strong_ce_weight``).

``behaviour = "code"`` reproduces the public implementation instead, where it differs from the paper:
its masks keep the *less* confident half (``le``); each masked loss is a batch scalar multiplied by the
mask and averaged, i.e. scaled by the share of the batch the mask keeps rather than restricted to it;
the class and batch levels count on the weak view only, the instance level on both views, unmasked on
the strong one. A record says which behaviour it used (params.behaviour).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from tekapbench.methods.base import LossTerm, MethodParams, kl_per_sample, register_method, soft_log_probs


class MLKDParams(MethodParams):
    temperatures: tuple[float, ...] = Field((2.0, 3.0, 4.0, 5.0, 6.0), min_length=1)
    confidence_percentile: float = Field(50.0, ge=0, le=100)
    strong_ce_weight: float = Field(1.0, ge=0, description="cross-entropy on the strong view")
    behaviour: Literal["paper", "code"] = "paper"


def _grams(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.softmax(logits.float() / temperature, dim=1)
    return p @ p.T, p.T @ p  # batch (B x B), class (C x C)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.float()
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


@register_method("mlkd", params=MLKDParams, ce_weight=1.0, weight=1.0)
class MLKDLoss(LossTerm):
    """Instance-, batch- and class-level logit distillation on weak and strong views."""

    reads = frozenset({"logits"})
    views = frozenset({"strong"})

    def __init__(self, params: MLKDParams, ctx=None):
        super().__init__()
        self.params = params

    def _masks(self, teacher_weak: torch.Tensor, keep_confident: bool) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(teacher_weak.float(), dim=1)
        confidence = probs.max(1).values
        class_confidence = probs.sum(0)
        q = self.params.confidence_percentile / 100
        sample_cut, class_cut = torch.quantile(confidence, q), torch.quantile(class_confidence, q)
        if keep_confident:
            return confidence >= sample_cut, class_confidence >= class_cut
        return confidence <= sample_cut, class_confidence <= class_cut

    def _levels(self, s: torch.Tensor, t: torch.Tensor, sample_mask, class_mask) -> torch.Tensor:
        """The paper's three levels at every temperature, restricted to the kept samples and classes."""
        total = s.new_zeros((), dtype=torch.float32)
        b, c = s.shape
        for temp in self.params.temperatures:
            kl = kl_per_sample(soft_log_probs(t, temp), soft_log_probs(s, temp))
            total = total + _masked_mean(kl, sample_mask) * temp**2
            (bs, cs), (bt, ct) = _grams(s, temp), _grams(t, temp)
            total = total + ((bt - bs).pow(2).sum(1) * sample_mask.float()).sum() / b
            total = total + ((ct - cs).pow(2).sum(1) * class_mask.float()).sum() / c
        return total

    def _code(self, s_w, t_w, s_s, t_s, sample_mask, class_mask) -> torch.Tensor:
        """The public implementation's arithmetic (see the module docstring)."""
        total = s_w.new_zeros((), dtype=torch.float32)
        b, c = s_w.shape
        kept, kept_classes = sample_mask.float().mean(), class_mask.float().mean()
        for temp in self.params.temperatures:
            kd = lambda s, t: kl_per_sample(soft_log_probs(t, temp), soft_log_probs(s, temp)).mean() * temp**2  # noqa: E731
            (bs, cs), (bt, ct) = _grams(s_w, temp), _grams(t_w, temp)
            total = total + kd(s_w, t_w) * kept + kd(s_s, t_s)
            total = total + (ct - cs).pow(2).sum() / c * kept_classes + (bt - bs).pow(2).sum() / b * kept
        return total

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        strong_student, strong_teacher = batch.views["strong"]
        s_w, t_w = student.logits.float(), teacher.logits.float()
        s_s, t_s = strong_student.logits.float(), strong_teacher.logits.float()
        paper = self.params.behaviour == "paper"
        sample_mask, class_mask = self._masks(t_w, keep_confident=paper)
        if paper:
            loss = self._levels(s_w, t_w, sample_mask, class_mask) + self._levels(s_s, t_s, sample_mask, class_mask)
        else:
            loss = self._code(s_w, t_w, s_s, t_s, sample_mask, class_mask)
        if self.params.strong_ce_weight and primary:  # the strong view's CE once, not per synthetic teacher
            loss = loss + self.params.strong_ce_weight * F.cross_entropy(s_s, batch.labels)
        return loss
