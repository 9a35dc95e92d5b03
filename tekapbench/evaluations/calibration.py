"""Calibration of the test-set predictions: expected calibration error and negative log-likelihood."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from tekapbench.evaluations.base import EvalContext, EvalParams, accuracy, Score, register_evaluation


class CalibrationParams(EvalParams):
    bins: int = Field(15, ge=1, description="equal-width confidence bins of the ECE")


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE in %: sum over equal-width bins of |accuracy - mean confidence| weighted by the bin's share,
    on the max softmax probability (Guo et al., 2017). A confidence of exactly 0 falls in the first bin."""
    probs = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    index = (confidence * bins).ceil().clamp(1, bins).long() - 1  # bins are (lo, hi]
    ece = torch.zeros((), device=logits.device)
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            ece += in_bin.float().mean() * (correct[in_bin].mean() - confidence[in_bin].mean()).abs()
    return 100.0 * ece.item()


def _scores(results: dict) -> dict[str, Score]:
    return {"ece": Score(results["ece"], higher_is_better=False),
            "nll": Score(results["nll"], higher_is_better=False, tolerance=0.05)}


@register_evaluation("calibration", params=CalibrationParams, scores=_scores)
def calibration(ctx: EvalContext, params: CalibrationParams) -> dict:
    """ECE (equal-width bins, %) and NLL of the test-set predictions."""
    logits, labels = ctx.test_logits(), ctx.test_labels
    return {
        "ece": expected_calibration_error(logits, labels, params.bins),
        "nll": F.cross_entropy(logits, labels).item(),
        "accuracy": accuracy(logits, labels),
    }
