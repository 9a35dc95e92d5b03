"""Calibration of the test-set predictions: expected calibration error and negative log-likelihood.

The per-bin mean confidence, accuracy and count are stored beside the ECE (the reliability diagram of
``tekapbench plot --kind reliability``); the ECE is computed from those same bins, so the two agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from tekapbench.evaluations.base import EvalContext, EvalParams, accuracy, Score, register_evaluation


class CalibrationParams(EvalParams):
    bins: int = Field(15, ge=1, description="equal-width confidence bins of the ECE")


def calibration_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict[str, list]:
    """Per equal-width bin of the max softmax probability: mean confidence (%), accuracy (%) and count;
    confidence and accuracy are None for an empty bin. Bins are (lo, hi]; a confidence of exactly 0 falls
    in the first bin."""
    probs = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    index = (confidence * bins).ceil().clamp(1, bins).long() - 1
    counts = torch.bincount(index, minlength=bins).tolist()
    zeros = torch.zeros(bins, dtype=torch.float64, device=logits.device)
    confidence_sums = zeros.index_add(0, index, confidence.double())
    correct_sums = zeros.index_add(0, index, correct)
    return {
        "bin_confidence": [100.0 * s / n if n else None for s, n in zip(confidence_sums.tolist(), counts)],
        "bin_accuracy": [100.0 * s / n if n else None for s, n in zip(correct_sums.tolist(), counts)],
        "bin_count": counts,
    }


def ece_from_bins(bins: dict[str, list]) -> float:
    """ECE in %: sum over bins of |accuracy - mean confidence| weighted by the bin's share of the examples."""
    total = sum(bins["bin_count"])
    return sum(n * abs(acc - conf) for conf, acc, n in zip(bins["bin_confidence"], bins["bin_accuracy"],
                                                         bins["bin_count"]) if n) / max(total, 1)


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE in %: sum over equal-width bins of |accuracy - mean confidence| weighted by the bin's share,
    on the max softmax probability (Guo et al., 2017). A confidence of exactly 0 falls in the first bin."""
    return ece_from_bins(calibration_bins(logits, labels, bins))


def _scores(results: dict) -> dict[str, Score]:
    return {"ece": Score(results["ece"], higher_is_better=False),
            "nll": Score(results["nll"], higher_is_better=False, tolerance=0.05)}


@register_evaluation("calibration", params=CalibrationParams, scores=_scores)
def calibration(ctx: EvalContext, params: CalibrationParams) -> dict:
    """ECE (equal-width bins, %) and NLL of the test-set predictions, with the reliability-diagram bins."""
    logits, labels = ctx.test_logits(), ctx.test_labels
    bins = calibration_bins(logits, labels, params.bins)
    return {
        "ece": ece_from_bins(bins),
        "nll": F.cross_entropy(logits, labels).item(),
        "accuracy": accuracy(logits, labels),
        **bins,
    }
