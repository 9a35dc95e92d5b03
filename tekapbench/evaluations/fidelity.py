"""How closely the student follows its teacher on the test set (Stanton et al., 2021)."""
from __future__ import annotations

import torch
from pydantic import Field

from tekapbench.evaluations.base import EvalContext, EvalParams, percent, Score, register_evaluation


class FidelityParams(EvalParams):
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the KL divergence")


def _scores(results: dict) -> dict[str, Score]:
    return {"top1_agreement": Score(results["top1_agreement"]),
            "kl_teacher_student": Score(results["kl_teacher_student"], higher_is_better=False, tolerance=0.05)}


@register_evaluation("fidelity", params=FidelityParams, scores=_scores)
def fidelity(ctx: EvalContext, params: FidelityParams) -> dict:
    """Top-1 agreement with the teacher (%) and KL(teacher || student) on the test set."""
    student, teacher = ctx.test_logits(), ctx.test_logits(teacher=True)
    t = params.temperature
    log_p_t, log_p_s = torch.log_softmax(teacher / t, 1), torch.log_softmax(student / t, 1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean()
    return {"top1_agreement": percent(student.argmax(1) == teacher.argmax(1)), "kl_teacher_student": kl.item()}
