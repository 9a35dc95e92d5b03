"""TeKAP (Hossain et al., ICLR 2025): one teacher, several perspectives.

The teacher signal that a base method reads is perturbed N times, ``v_i = alpha * eta_i + (1 - alpha) * v``
with ``eta_i ~ N(0, sigma^2)`` drawn fresh every batch from TeKAP's own seeded generator, and the base
loss is summed over the real and the synthetic teachers:

- official code (default): ``real_weight * L(s, t) + synthetic_weight * sum_i L(s, t_i)`` with weights
  1 and 0.8 at logit level (N=3, alpha=0.1, sigma=1) and 1 and 1 at feature level (N=1, alpha=0.1, sigma=0.1);
- paper: ``lambda * L(s, t) + (1 - lambda) * sum_i L(s, t_i)``.

Logit level perturbs ``logits``; feature level perturbs the feature fields the base term reads (the pooled
embedding for CRD, the stage features for FitNet). It wraps any LossTerm, so KD+TeKAP, DKD+TeKAP,
CRD+TeKAP(F), ... are the base methods unchanged.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tekapbench.methods.base import LossTerm
from tekapbench.models.base import ModelOutput
from tekapbench.seeding import LazyGenerator, derive_seed

LEVEL_FIELDS: dict[str, frozenset[str]] = {
    "logit": frozenset({"logits"}),
    "feature": frozenset({"embedding", "features", "preact_features"}),
}

# The official code's numbers for each level (mdimtiazh/TeKAP@279d380c: distiller_zoo/Ours_TeKAP_L.py for the
# logit level, crd/criterion.py for the feature level). TeKAP (F+L) is two wrapped terms,
# a feature-level one and a logit-level one, each with its own defaults (see suites/diverse.toml).
LEVEL_DEFAULTS: dict[str, dict[str, float]] = {
    "logit": {"n_teachers": 3, "alpha": 0.1, "sigma": 1.0, "real_weight": 1.0, "synthetic_weight": 0.8},
    "feature": {"n_teachers": 1, "alpha": 0.1, "sigma": 0.1, "real_weight": 1.0, "synthetic_weight": 1.0},
}


def _unit_normal(shape, generator, device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=device)


def _unit_uniform(shape, generator, device) -> torch.Tensor:
    # uniform with unit variance, so that sigma means the same for both distributions
    return (torch.rand(shape, generator=generator, device=device) * 2 - 1) * 3**0.5


NOISE = {"normal": _unit_normal, "uniform": _unit_uniform}


class TeKAPSettings(BaseModel):
    """TeKAP's knobs as written in a suite; ``resolved()`` fills the official defaults of the level."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    level: Literal["logit", "feature"] = "logit"
    n_teachers: int | None = Field(None, ge=1, description="number of synthetic teachers N")
    alpha: float | None = Field(None, ge=0, le=1, description="weight of the noise in the mix")
    sigma: float | None = Field(None, ge=0, description="standard deviation of the noise")
    noise: Literal["normal", "uniform"] = "normal"
    noise_per: Literal["sample", "batch"] = Field(
        "sample", description="sample: fresh noise for every sample; batch: one draw shared by the batch")
    weighting: Literal["official", "paper"] = "official"
    lambda_: float | None = Field(None, alias="lambda", ge=0, le=1, description="paper form: weight of the real teacher")
    real_weight: float | None = Field(None, ge=0, description="official form: weight of the real teacher's loss")
    synthetic_weight: float | None = Field(None, ge=0, description="official form: weight of each synthetic teacher's loss")

    @model_validator(mode="after")
    def _weights_match_form(self) -> "TeKAPSettings":
        if self.weighting == "paper" and (self.real_weight is not None or self.synthetic_weight is not None):
            raise ValueError("weighting = 'paper' is set by 'lambda'; real_weight/synthetic_weight belong to 'official'")
        if self.weighting == "official" and self.lambda_ is not None:
            raise ValueError("'lambda' needs weighting = 'paper'")
        return self

    def resolved(self) -> "TeKAPSettings":
        defaults = LEVEL_DEFAULTS[self.level]
        values = self.model_dump()
        for key in ("n_teachers", "alpha", "sigma"):
            if values[key] is None:
                values[key] = defaults[key]
        values["n_teachers"] = int(values["n_teachers"])
        if self.weighting == "paper":
            lam = 0.5 if self.lambda_ is None else self.lambda_
            values.update(lambda_=lam, real_weight=lam, synthetic_weight=1.0 - lam)
        else:
            for key in ("real_weight", "synthetic_weight"):
                if values[key] is None:
                    values[key] = defaults[key]
        return TeKAPSettings.model_construct(**values)  # already validated; filled values only


class TeKAP(LossTerm):
    """Wraps a base loss term; the base term sees the real teacher and N synthetic ones."""

    def __init__(self, base: LossTerm, settings: TeKAPSettings):
        super().__init__()
        self.base = base
        self.settings = settings.resolved()
        self.perturbed = LEVEL_FIELDS[self.settings.level] & type(base).reads
        if not self.perturbed:
            raise ValueError(
                f"TeKAP level {self.settings.level!r} changes nothing that {type(base).__name__} reads "
                f"({', '.join(sorted(type(base).reads))})")
        self.reads = type(base).reads
        self.multi_teacher = type(base).multi_teacher
        self.views = type(base).views
        self.noise_generator = LazyGenerator()  # unseeded (e.g. a unit test): torch's global generator

    def reseed(self, seed: int) -> None:
        self.noise_generator.reseed(seed)
        self.base.reseed(derive_seed(seed, "base"))

    def _perturb(self, x: torch.Tensor) -> torch.Tensor:
        s = self.settings
        x = x.float()
        shape = x.shape if s.noise_per == "sample" else (1, *x.shape[1:])
        eta = NOISE[s.noise](shape, self.noise_generator.on(x.device), x.device) * s.sigma
        return s.alpha * eta + (1 - s.alpha) * x

    def _perturbed(self, teacher: ModelOutput) -> ModelOutput:
        changes = {}
        for name in sorted(self.perturbed):
            value = getattr(teacher, name)
            changes[name] = tuple(map(self._perturb, value)) if isinstance(value, tuple) else self._perturb(value)
        return teacher.replace(**changes)

    def _perturbed_set(self, teacher):
        return tuple(map(self._perturbed, teacher)) if isinstance(teacher, tuple) else self._perturbed(teacher)

    def synthetic_views(self, teacher: ModelOutput | tuple[ModelOutput, ...]) -> list:
        """N synthetic teachers; for a multi-teacher term, N synthetic copies of the whole set, each of
        its teachers perturbed with its own noise."""
        return [self._perturbed_set(teacher) for _ in range(self.settings.n_teachers)]

    def _with_views_perturbed(self, batch):
        """The batch with the teacher's outputs on its other views (MLKD's strong view) perturbed too."""
        if not batch.views:
            return batch
        return replace(batch, views={name: (s, self._perturbed_set(t)) for name, (s, t) in batch.views.items()})

    def forward(self, student, teacher, batch, epoch, *, primary=True):
        s = self.settings
        loss = s.real_weight * self.base(student, teacher, batch, epoch, primary=primary)
        for view in self.synthetic_views(teacher):
            loss = loss + s.synthetic_weight * self.base.synthetic(student, view, self._with_views_perturbed(batch),
                                                                   epoch, self.perturbed)
        return loss
