"""MLKD (Jin, Wang and Lin, CVPR 2023): multi-level logit distillation.

Predictions are compared at three levels, each at several temperatures ("prediction augmentation",
T in {2, 3, 4, 5, 6}) and on two views of the batch, the usual weak one (crop + flip) and a strong one
(an independent crop + flip, RandAugment and Cutout; tekapbench/data/strong.py):

- instance: ``T^2 * KL(p_t || p_s)`` per sample, batch mean (KD);
- batch: the B x B Gram matrix of predictions ``P P^T``, summed squared difference, / B;
- class: the C x C class-correlation matrix ``P^T P``, summed squared difference, / C.

The teacher's confidence on the weak view sets two masks: per sample (its max probability) and per class
(its summed probability), each cut at the batch's ``confidence_percentile`` (linear interpolation, as
``np.percentile``).

``behaviour = "official"`` (default) is the public code, github:Jin-Ying/Multi-Level-Logit-Distillation,
mdistiller/distillers/KD_ours.py, ``KD_ours.forward_train`` (run by tools/train_ours.py with the AugTrainer
of mdistiller/engine/trainer.py, which sums the returned losses). Its total loss is

    0.1 * (CE(weak) + CE(strong))
    + 0.9 * [ kept * sum_T KD_T(weak)                                     (instance, weak view)
              + KD_4(strong) + KD_3(strong) + KD_5(strong) + KD_2(weak) + KD_6(weak)   (instance, "strong")
              + kept_classes * sum_T class_T(weak) + kept * sum_T batch_T(weak) ]

where ``kept`` is the share of samples whose confidence is at or *below* the median and ``kept_classes`` the
share of classes at or below it (each masked loss is a batch scalar times the mask, averaged). These are
the code's departures from the paper, reproduced as they are:

- the masks keep the *less* confident half (``le``), and scale a batch loss by the share they keep instead
  of restricting it to the kept samples/classes;
- the strong view's instance loss reads the weak view's logits at T = 2 and T = 6 (a copy-paste slip in
  ``loss_kd_strong``); with other ``temperatures``, those equal to 2 or 6 do the same;
- the class and batch levels count on the weak view only (``loss_cc_strong`` and ``loss_bc_strong`` are
  computed but left out of the returned losses);
- the strong view has its own cross-entropy, weighted like the weak one (CE_WEIGHT 0.1, KD_WEIGHT 0.9 are
  mdistiller/engine/cfg.py's ``KD.LOSS`` defaults; configs/cifar100/ours/*.yaml set none).

How our objective gives that total: it computes ``ce_weight * CE(weak) + weight * term`` with the
registered ``ce_weight = 0.1`` and ``weight = 0.9``, and this term returns the bracket above plus
``strong_ce_weight * CE(strong)`` with ``strong_ce_weight = 0.1 / 0.9``, so that ``weight * strong_ce_weight
= 0.1``. Under TeKAP the term is called again on synthetic teachers with ``primary=False``; the strong CE
is added on the primary call only (it is multiplied by TeKAP's real-teacher weight, 1 by default).
Overriding ``weight`` in a suite scales the strong CE with it; set ``strong_ce_weight`` to keep it apart.

``behaviour = "paper"``: the paper's form. The masks keep the confident samples and classes (at or above
the percentile) and the losses are restricted to them (mean over kept samples for the instance level,
sum over kept rows for the batch and class levels); every level counts on both views, each on its own
logits. A record says which behaviour it used (params.behaviour).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from tekapbench.methods.base import LossTerm, MethodParams, kl_per_sample, register_method, soft_log_probs

# Temperatures at which the official code's strong-view instance loss reads the weak view's logits.
OFFICIAL_WEAK_IN_STRONG = (2.0, 6.0)


class MLKDParams(MethodParams):
    temperatures: tuple[float, ...] = Field((2.0, 3.0, 4.0, 5.0, 6.0), min_length=1)
    confidence_percentile: float = Field(50.0, ge=0, le=100)
    strong_ce_weight: float = Field(
        0.1 / 0.9, ge=0,
        description="cross-entropy on the strong view, in units of the term's weight (0.9 * 1/9 = 0.1 official)")
    behaviour: Literal["official", "paper"] = "official"


def _grams(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.softmax(logits.float() / temperature, dim=1)
    return p @ p.T, p.T @ p  # batch (B x B), class (C x C)


def _kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    return kl_per_sample(soft_log_probs(t, temperature), soft_log_probs(s, temperature)).mean() * temperature**2


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.float()
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


# The official recipe (configs/cifar100/ours/*.yaml over mdistiller/engine/cfg.py): lr 0.025 at batch 64
# (0.01 for the ShuffleNet and MobileNetV2 students), plain SGD, wd 5e-4, x0.1 after 150/180/210, and 480 or
# 960 epochs for five pairs, whose milestones stay at 150/180/210 (the recipe keeps milestones stated for
# another epoch count than a per-pair one).
OFFICIAL_RECIPES = {"cifar100": {
    "source": "MLKD, github:Jin-Ying/Multi-Level-Logit-Distillation@5ee473fcf193dfb00a0598b64d0acfe6ad58a482 "
              "configs/cifar100/ours/*.yaml, mdistiller/engine/cfg.py",
    "lr": 0.025, "lr_batch_size": 64, "lr_by_arch": {"MobileNetV2": 0.01, "ShuffleV1": 0.01, "ShuffleV2": 0.01},
    "by_pair": {
        "ResNet50->MobileNetV2": {"epochs": 480},
        "vgg13->MobileNetV2": {"epochs": 480},
        "wrn_40_2->ShuffleV1": {"epochs": 480},
        "resnet32x4->ShuffleV1": {"epochs": 960},
        "resnet32x4->ShuffleV2": {"epochs": 960},
    },
}}


@register_method("mlkd", params=MLKDParams, ce_weight=0.1, weight=0.9, recipes=OFFICIAL_RECIPES)
class MLKDLoss(LossTerm):
    """Instance-, batch- and class-level logit distillation on weak and strong views."""

    reads = frozenset({"logits"})
    views = {"strong": "mlkd_strong"}  # the official strong view (data/strong.py)

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

    def official_parts(self, s_w, t_w, s_s, t_s) -> dict[str, torch.Tensor]:
        """The public code's distillation losses, unweighted (KD_WEIGHT 0.9 multiplies each there):
        ``instance_weak + instance_strong`` is its ``loss_kd``, ``class`` its ``loss_cc``, ``batch`` its
        ``loss_bc``."""
        sample_mask, class_mask = self._masks(t_w, keep_confident=False)
        kept, kept_classes = sample_mask.float().mean(), class_mask.float().mean()
        zero = s_w.new_zeros((), dtype=torch.float32)
        parts = {"instance_weak": zero, "instance_strong": zero, "class": zero, "batch": zero}
        b, c = s_w.shape
        for temp in self.params.temperatures:
            weak_kd = _kd(s_w, t_w, temp)
            parts["instance_weak"] = parts["instance_weak"] + weak_kd * kept
            in_strong = weak_kd if temp in OFFICIAL_WEAK_IN_STRONG else _kd(s_s, t_s, temp)  # the code's slip
            parts["instance_strong"] = parts["instance_strong"] + in_strong
            (bs, cs), (bt, ct) = _grams(s_w, temp), _grams(t_w, temp)
            parts["class"] = parts["class"] + (ct - cs).pow(2).sum() / c * kept_classes
            parts["batch"] = parts["batch"] + (bt - bs).pow(2).sum() / b * kept
        return parts

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        strong_student, strong_teacher = batch.views["strong"]
        s_w, t_w = student.logits.float(), teacher.logits.float()
        s_s, t_s = strong_student.logits.float(), strong_teacher.logits.float()
        if self.params.behaviour == "paper":
            sample_mask, class_mask = self._masks(t_w, keep_confident=True)
            loss = self._levels(s_w, t_w, sample_mask, class_mask) + self._levels(s_s, t_s, sample_mask, class_mask)
        else:
            loss = sum(self.official_parts(s_w, t_w, s_s, t_s).values())
        if self.params.strong_ce_weight and primary:  # the strong view's CE once, not per synthetic teacher
            loss = loss + self.params.strong_ce_weight * F.cross_entropy(s_s, batch.labels)
        return loss
