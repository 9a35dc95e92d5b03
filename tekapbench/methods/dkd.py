"""DKD (Zhao et al., CVPR 2022): KD decoupled into target-class (TCKD) and non-target-class (NCKD) parts.

Per sample, with p the softened teacher distribution and t the label,
``KD = TCKD + (1 - p_t) * NCKD``; DKD reweights the two as ``alpha * TCKD + beta * NCKD`` and warms the
term up linearly over the first ``warmup`` epochs.

Official code: github:megvii-research/mdistiller, ``mdistiller/distillers/DKD.py`` (``dkd_loss``,
``DKD.forward_train``: warm-up ``min(epoch / warmup, 1)``, epochs counted from 1) and the per-pair beta of
``configs/cifar100/dkd/*.yaml``; CE 1, alpha 1, T 4, warm-up 20. It matches the paper's
``alpha * TCKD + beta * NCKD``. Two numerical choices, equal wherever the official code is finite: the
target class is removed with a -1e4 logit offset (official: -1000), and TCKD's binary log-probabilities
come from logsumexp rather than the log of summed probabilities (no log(0) when a probability underflows).
"""
from __future__ import annotations

import torch
from pydantic import Field

from tekapbench.methods.base import LossTerm, MethodParams, kl_per_sample, register_method

# Per-pair beta of the DKD paper's CIFAR-100 configs; every other pair uses 8.
BETA_BY_PAIR: dict[tuple[str, str], float] = {
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
    ("vgg13", "vgg8"): 6.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
    ("vgg13", "MobileNetV2"): 6.0,
}
DEFAULT_BETA = 8.0

_EXCLUDED = -1e4  # a logit offset that removes a class from a softmax without creating inf or NaN


class DKDParams(MethodParams):
    alpha: float = Field(1.0, ge=0)
    beta: float | None = Field(None, ge=0, description="None: the per-pair value of the DKD paper")
    temperature: float = Field(4.0, gt=0)
    warmup: int = Field(20, ge=0, description="epochs of linear warm-up of the DKD term")

    def resolved_for(self, teacher_arch: str, student_arch: str) -> "DKDParams":
        if self.beta is not None:
            return self
        return self.model_copy(update={"beta": BETA_BY_PAIR.get((teacher_arch, student_arch), DEFAULT_BETA)})

    def advice(self, epochs: int) -> list[str]:
        if self.warmup > epochs:
            return [f"DKD warmup ({self.warmup} epochs) is longer than training ({epochs} epochs): the DKD term "
                    f"never reaches full weight; set params.warmup"]
        return []


def decoupled_kd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (TCKD, NCKD), both already multiplied by T^2. Needs at least 3 classes."""
    if student_logits.shape[1] < 3:
        raise ValueError("DKD's non-target term is undefined with fewer than 3 classes")
    zs = student_logits.float() / temperature
    zt = teacher_logits.float() / temperature
    is_target = torch.zeros_like(zs, dtype=torch.bool).scatter_(1, target.view(-1, 1), True)

    def binary_log_probs(z: torch.Tensor) -> torch.Tensor:
        # log [p_t, 1 - p_t], computed with logsumexp so that a confident p_t does not lose precision
        log_all = torch.logsumexp(z, dim=1)
        log_target = z.gather(1, target.view(-1, 1)).squeeze(1) - log_all
        log_rest = torch.logsumexp(z.masked_fill(is_target, float("-inf")), dim=1) - log_all
        return torch.stack([log_target, log_rest], dim=1)

    def non_target_log_probs(z: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(z.masked_fill(is_target, _EXCLUDED), dim=1)

    tckd = kl_per_sample(binary_log_probs(zt), binary_log_probs(zs))
    nckd = kl_per_sample(non_target_log_probs(zt), non_target_log_probs(zs))
    return tckd * temperature**2, nckd * temperature**2


@register_method("dkd", params=DKDParams, ce_weight=1.0, weight=1.0)
class DKDLoss(LossTerm):
    """Decoupled KD: alpha * TCKD + beta * NCKD, linearly warmed up."""

    reads = frozenset({"logits"})

    def __init__(self, params: DKDParams, ctx=None):
        super().__init__()
        if params.beta is None:
            raise ValueError("DKD beta must be resolved for the teacher->student pair first")
        self.params = params

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        p = self.params
        tckd, nckd = decoupled_kd(student.logits, teacher.logits, batch.labels, p.temperature)
        ramp = min(epoch / p.warmup, 1.0) if p.warmup > 0 else 1.0
        return ramp * (p.alpha * tckd.mean() + p.beta * nckd.mean())
