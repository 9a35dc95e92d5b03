"""The training objective of a run: a weighted sum of named loss terms (torchdistill style)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tekapbench.methods.base import METHODS, DistillContext, LossTerm, MethodParams
from tekapbench.modifiers.tekap import TeKAP, TeKAPSettings
from tekapbench.plugins import plugin_code
from tekapbench.seeding import derive_seed


@dataclass(frozen=True)
class TermSpec:
    """One resolved loss term: a base method, its weight and settings, optionally wrapped by TeKAP."""

    method: str
    weight: float
    params: MethodParams
    tekap: TeKAPSettings | None = None

    @property
    def name(self) -> str:
        return f"{self.method}+tekap" if self.tekap else self.method

    def to_dict(self) -> dict:
        d = {
            "method": self.method,
            "weight": self.weight,
            "params": self.params.model_dump(mode="json"),
            "tekap": self.tekap.model_dump(mode="json", by_alias=True) if self.tekap else None,
        }
        revision = METHODS.get(self.method).revision
        if revision > 1:  # absent at 1, so the ids of runs of unrevised methods stay what they were
            d["revision"] = revision
        if (code := plugin_code(METHODS, self.method)) is not None:  # an edited plugin method is a new run
            d["plugin_code"] = code
        return d


@dataclass(frozen=True)
class MethodSpec:
    """A resolved method: the cross-entropy weight and the distillation terms (none: vanilla)."""

    ce_weight: float
    terms: tuple[TermSpec, ...] = field(default_factory=tuple)

    @property
    def needs_teacher(self) -> bool:
        return bool(self.terms)

    def to_dict(self) -> dict:
        return {"ce_weight": self.ce_weight, "terms": [t.to_dict() for t in self.terms]}

    def describe(self) -> str:
        """e.g. ``0.1*ce + 0.9*kd+tekap``."""
        parts = [f"{self.ce_weight:g}*ce"] if self.ce_weight else []
        return " + ".join(parts + [f"{t.weight:g}*{t.name}" for t in self.terms])


class Objective(nn.Module):
    """``ce_weight * CE + sum_k weight_k * term_k``; returns the weighted named terms.

    Terms run in fp32 with autocast off, whatever precision the networks ran in.
    """

    def __init__(self, spec: MethodSpec, ctx: DistillContext | None):
        super().__init__()
        self.ce_weight = spec.ce_weight
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        for term_spec in spec.terms:
            entry = METHODS.get(term_spec.method)
            term: LossTerm = entry.term(term_spec.params, ctx)
            if term_spec.tekap is not None:
                term = TeKAP(term, term_spec.tekap)
            key = term_spec.name
            while key in self.terms:  # the same method twice (e.g. with other settings)
                key += "'"
            self.terms[key] = term
            self.weights[key] = term_spec.weight

    @property
    def views(self) -> dict[str, str]:
        """The other views of a batch that some term compares on, each with its default augmentation."""
        return {name: aug for term in self.terms.values() for name, aug in term.views.items()}

    def reseed(self, seed: int) -> None:
        for key, term in self.terms.items():
            term.reseed(derive_seed(seed, key))

    def forward(self, student, teacher, batch, epoch: int) -> dict[str, torch.Tensor]:
        """``teacher``: the teacher's ModelOutput, or a tuple of every teacher's (multi-teacher runs);
        a single-teacher term sees the first of them."""
        teachers = teacher if isinstance(teacher, tuple) else (teacher,)
        with torch.autocast(device_type=student.logits.device.type, enabled=False):
            losses = {}
            if self.ce_weight:
                losses["ce"] = self.ce_weight * F.cross_entropy(student.logits.float(), batch.labels)
            for key, term in self.terms.items():
                seen = teachers if term.multi_teacher else teachers[0]
                losses[key] = self.weights[key] * term(student, seen, batch, epoch)
            return losses
