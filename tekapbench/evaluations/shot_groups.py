"""Per-class test accuracy grouped by training-set class size: the long-tailed CIFAR-100 protocol."""
from __future__ import annotations

import math

import torch
from pydantic import Field

from tekapbench.evaluations.base import EvalContext, EvalParams, accuracy, percent, Score, register_evaluation


class ShotGroupParams(EvalParams):
    many_above: int = Field(100, ge=0, description="'many-shot': more than this many training images")
    few_below: int = Field(20, ge=0, description="'few-shot': fewer than this many training images")


def _scores(results: dict) -> dict[str, Score]:
    names = ["accuracy", "many_shot", "medium_shot", "few_shot"]
    return {name: Score(results[name]) for name in names if not math.isnan(results[name])}  # an empty group: none


@register_evaluation("shot_groups", params=ShotGroupParams, scores=_scores)
def shot_groups(ctx: EvalContext, params: ShotGroupParams) -> dict:
    """Overall, many-, medium- and few-shot accuracy (%) and per-class accuracy; an empty group is NaN."""
    logits, labels = ctx.test_logits(), ctx.test_labels
    num_classes = ctx.data.num_classes
    train_counts = torch.bincount(ctx.data.train_labels.cpu(), minlength=num_classes)
    hits = (logits.argmax(1) == labels).cpu()
    labels = labels.cpu()
    per_class = [percent(hits[labels == c]) if (labels == c).any() else math.nan for c in range(num_classes)]
    groups = {
        "many": [c for c in range(num_classes) if train_counts[c] > params.many_above],
        "medium": [c for c in range(num_classes) if params.few_below <= train_counts[c] <= params.many_above],
        "few": [c for c in range(num_classes) if train_counts[c] < params.few_below],
    }

    def group_accuracy(classes: list[int]) -> float:
        mask = torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))
        return percent(hits[mask]) if classes and mask.any() else math.nan

    return {
        "accuracy": accuracy(logits, ctx.test_labels),
        **{f"{name}_shot": group_accuracy(classes) for name, classes in groups.items()},
        "group_sizes": {name: len(classes) for name, classes in groups.items()},
        "per_class_accuracy": per_class,
        "train_counts": train_counts.tolist(),
    }
