"""What a distillation method is: a loss term over student and teacher outputs, plus its defaults.

The training objective of a run is ``ce_weight * CE + sum_k weight_k * term_k(student, teacher)``.
A base method contributes one term (KD, CRD, FitNet, DKD) or none (vanilla); modifiers such as TeKAP wrap
a term and feed it other views of the teacher, so no method is ever copied to add a modifier to it.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from tekapbench.data.loader import Batch
from tekapbench.models.base import FeatureShapes, ModelOutput
from tekapbench.registry import Registry


class MethodParams(BaseModel):
    """A method's own settings (typed, validated from the suite, defaults in the class)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def resolved_for(self, teacher_arch: str, student_arch: str) -> "MethodParams":
        """Fill defaults that depend on the teacher->student pair (e.g. DKD's beta)."""
        return self

    def advice(self, epochs: int) -> list[str]:
        """Settings that are valid but probably not meant with this many epochs (shown as notes)."""
        return []


class NoParams(MethodParams):
    pass


@dataclass(frozen=True)
class DistillContext:
    """What a loss term may need to build itself."""

    student: FeatureShapes
    teacher: FeatureShapes
    num_classes: int
    train_labels: torch.Tensor  # int64 (N,), on the training device
    device: torch.device

    @property
    def num_train(self) -> int:
        return int(self.train_labels.numel())


class LossTerm(nn.Module, metaclass=ABCMeta):
    """One distillation loss term. Subclasses set ``reads`` and implement ``forward``.

    ``primary`` is False when a modifier calls the term again on a synthetic view of the teacher:
    stateful terms (CRD's memory bank) then reuse this batch's sampling and leave their state alone.
    """

    #: the ModelOutput fields of the teacher that the term reads; modifiers perturb only these
    reads: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def forward(
        self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int, *, primary: bool = True
    ) -> torch.Tensor:
        """The term's unweighted loss (fp32 scalar) for this batch; ``epoch`` counts from 1."""

    def reseed(self, seed: int) -> None:
        """Reset any random generator the term owns (called by the trainer at each epoch start)."""


@dataclass(frozen=True)
class MethodEntry:
    name: str
    term: Callable[[Any, DistillContext], LossTerm] | None  # None: cross-entropy only
    params: type[MethodParams]
    ce_weight: float
    weight: float
    description: str = ""


METHODS: Registry[MethodEntry] = Registry("method")


def register_method(name: str, *, params: type[MethodParams] = NoParams, ce_weight: float, weight: float):
    """Class decorator: ``@register_method("kd", params=KDParams, ce_weight=0.1, weight=0.9)``."""

    def decorator(term_cls):
        doc = (term_cls.__doc__ or "").strip().splitlines()
        METHODS.register(name)(
            MethodEntry(name, term_cls, params, ce_weight, weight, doc[0] if doc else "")
        )
        return term_cls

    return decorator


def soft_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 log-softmax of temperature-scaled logits (losses never run in bf16)."""
    return torch.log_softmax(logits.float() / temperature, dim=1)


def kl_per_sample(log_p_target: torch.Tensor, log_p_model: torch.Tensor) -> torch.Tensor:
    """KL(target || model) for each row, from log-probabilities."""
    return (log_p_target.exp() * (log_p_target - log_p_model)).sum(dim=1)
