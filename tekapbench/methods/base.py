"""What a distillation method is: a loss term over student and teacher outputs, plus its defaults.

The training objective of a run is ``ce_weight * CE + sum_k weight_k * term_k(student, teacher)``.
A base method contributes one term (KD, CRD, FitNet, DKD) or none (vanilla); modifiers such as TeKAP wrap
a term and feed it other views of the teacher, so no method is ever copied to add a modifier to it.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from tekapbench.data.loader import Batch
from tekapbench.engine.recipe import check_recipe_table
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
    teachers: tuple[FeatureShapes, ...] = ()  # every teacher, for multi-teacher terms (default: (teacher,))

    @property
    def all_teachers(self) -> tuple[FeatureShapes, ...]:
        return self.teachers or (self.teacher,)

    @property
    def num_train(self) -> int:
        return int(self.train_labels.numel())


class LossTerm(nn.Module, metaclass=ABCMeta):
    """One distillation loss term. Subclasses set ``reads`` and implement ``forward``.

    ``primary`` is False when a modifier calls the term again on a synthetic view of the teacher: a term
    with random draws reuses the batch's (CRD's negatives, DGKD's dropped term), and a stateful term does
    what its official code does on such a call (CRD's memory sees and takes a second update, as in TeKAP's
    code); see each method's docstring.
    """

    #: the ModelOutput fields of the teacher that the term reads; modifiers perturb only these
    reads: ClassVar[frozenset[str]] = frozenset()
    #: True: ``teacher`` is a tuple of every teacher's ModelOutput (teacher first, then the assistants)
    multi_teacher: ClassVar[bool] = False
    #: other views of the batch the term compares on, each with its default augmentation (data/views.py),
    #: e.g. {"strong": "mlkd_strong"}; a run's recipe says which augmentation each view got. The trainer runs
    #: student and teachers on them and hands the outputs over in ``batch.views[name]``
    views: ClassVar[Mapping[str, str]] = {}

    @abstractmethod
    def forward(
        self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int, *, primary: bool = True
    ) -> torch.Tensor:
        """The term's unweighted loss (fp32 scalar) for this batch; ``epoch`` counts from 1."""

    def synthetic(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int,
                  perturbed: frozenset[str]) -> torch.Tensor:
        """The term on a synthetic teacher whose fields ``perturbed`` a modifier changed (``primary=False``).
        A term with a part that reads none of them overrides this to leave that part out: it counted once,
        on the real teacher."""
        return self(student, teacher, batch, epoch, primary=False)

    def reseed(self, seed: int) -> None:
        """Reset any random generator the term owns (called by the trainer at each epoch start)."""


# Which teachers a run of a method learns from (suite/plan.py builds the runs of each):
TEACHER_TOPOLOGIES = {
    "one": "the pair's teacher",
    "chain": "through the pair's assistants: each from the one before it, the student from the last (TAKD)",
    "dense": "each assistant from the teacher and the assistants before it, the student from all (DGKD)",
    "ensemble": "several teachers of the pair's architecture, trained with other seeds (CA-MKD)",
}
THROUGH_ASSISTANTS = frozenset({"chain", "dense"})  # topologies that need the pair's assistants


@dataclass(frozen=True)
class MethodEntry:
    name: str
    term: Callable[[Any, DistillContext], LossTerm] | None  # None: cross-entropy only
    params: type[MethodParams]
    ce_weight: float
    weight: float
    description: str = ""
    teachers: str = "one"  # a key of TEACHER_TOPOLOGIES
    # the official training recipe where it departs from the dataset's standard one, by dataset recipe
    # name (engine/recipe.py explains the layers): {"cifar100": {"source": ..., "lr": ..., ...}}
    recipes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # bumped when the term computes something else under the same settings, so that runs of the old
    # computation keep their ids and a resumed or skipped run never mixes the two
    revision: int = 1


METHODS: Registry[MethodEntry] = Registry("method")


def register_method(name: str, *, params: type[MethodParams] = NoParams, ce_weight: float, weight: float,
                    teachers: str = "one", description: str | None = None,
                    recipes: Mapping[str, Mapping[str, Any]] | None = None, revision: int = 1):
    """Class decorator: ``@register_method("kd", params=KDParams, ce_weight=0.1, weight=0.9)``; ``teachers``
    names the topology of its teachers (TEACHER_TOPOLOGIES); ``recipes`` the official training recipe per
    dataset recipe name, where it is not the dataset's standard one (each table names its ``source``);
    ``revision``, bumped when the term's computation changes under unchanged settings, enters run ids."""
    if teachers not in TEACHER_TOPOLOGIES:
        raise ValueError(f"method {name!r}: teachers={teachers!r}; allowed: {', '.join(TEACHER_TOPOLOGIES)}")
    for dataset, table in (recipes or {}).items():
        check_recipe_table(table, f"method {name!r} recipes[{dataset!r}]")
        if not table.get("source"):
            raise ValueError(f"method {name!r} recipes[{dataset!r}]: name its 'source' (repository, commit, file)")

    def decorator(term_cls):
        doc = (term_cls.__doc__ or "").strip().splitlines()
        METHODS.register(name)(
            MethodEntry(name, term_cls, params, ce_weight, weight, description or (doc[0] if doc else ""), teachers,
                        dict(recipes or {}), revision)
        )
        return term_cls

    return decorator


def soft_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """fp32 log-softmax of temperature-scaled logits (losses never run in bf16)."""
    return torch.log_softmax(logits.float() / temperature, dim=1)


def kl_per_sample(log_p_target: torch.Tensor, log_p_model: torch.Tensor) -> torch.Tensor:
    """KL(target || model) for each row, from log-probabilities."""
    return (log_p_target.exp() * (log_p_target - log_p_model)).sum(dim=1)
