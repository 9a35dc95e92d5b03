"""What an evaluation is: a registered function from a trained model (and its settings) to results.

Every result is stored with the settings that produced it (results/store.py), so a number is never
separated from how it was measured; evaluations of finished runs are computed from the saved weights.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from tekapbench.plugins import plugin_code
from tekapbench.data.base import DataOptions, LoaderSettings, Splits, load_dataset
from tekapbench.data.loader import DeviceLoader
from tekapbench.registry import Registry


class EvalParams(BaseModel):
    """An evaluation's settings (typed, validated from the suite, defaults in the class)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def required_datasets(self) -> list[str]:
        """Datasets besides the run's own that the evaluation reads (checked before anything trains)."""
        return []


class NoEvalParams(EvalParams):
    pass


class Skip(Exception):
    """Raised by an evaluation that does not apply to a run (e.g. fidelity of a run without a teacher)."""


class NormalizedLogits(nn.Module):
    """Takes images in [0, 1], normalizes inside and returns fp32 logits: what attack libraries expect."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std).logits.float()


@dataclass
class EvalContext:
    """What an evaluation gets: the model in eval mode on its device, the run's data, and the means to
    read other datasets. Test-set outputs are computed once and shared by the evaluations of a run."""

    model: nn.Module
    data: Splits
    device: torch.device
    data_options: DataOptions
    load_teacher: Callable[[], nn.Module] | None = None  # loaded on first use only
    datasets: Callable[[str], Splits] | None = None  # the runner's cache of loaded datasets
    batch_size: int = 512
    test_view: LoaderSettings | None = None  # how the run's test images are prepared (crop sizes of image files)
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def teacher(self) -> nn.Module | None:
        if "teacher_model" not in self._cache:
            self._cache["teacher_model"] = self.load_teacher() if self.load_teacher else None
        return self._cache["teacher_model"]

    def dataset(self, name: str) -> Splits:
        return self.datasets(name) if self.datasets else load_dataset(name, self.data_options)

    def loader(self, images: torch.Tensor, labels: torch.Tensor) -> DeviceLoader:
        return DeviceLoader(images, labels, batch_size=self.batch_size, device=self.device, mean=self.data.mean,
                            std=self.data.std, train=False)

    def test_images(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 test images of the run's dataset at ``indices``, as its test loader prepares them."""
        return self.data.test_images_at(indices, self.test_view)

    @torch.no_grad()
    def outputs(self, model: nn.Module, images: torch.Tensor | None, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 logits and pooled embeddings of ``model`` on uint8 images, in order (``images`` None: the run's
        own test split, streamed when it is a dataset of image files)."""
        logits, embeddings = [], []
        if images is None:
            batches = self.data.loader(False, replace(self.test_view or LoaderSettings(self.batch_size),
                                                      batch_size=self.batch_size), self.device)
        else:
            batches = self.loader(images, labels)
        for batch in batches.epoch():
            out = model(batch.images)
            logits.append(out.logits.float())
            embeddings.append(out.embedding.float())
        return torch.cat(logits), torch.cat(embeddings)

    def test_logits(self, teacher: bool = False) -> torch.Tensor:
        key = "teacher" if teacher else "student"
        if key not in self._cache:
            model = self.teacher if teacher else self.model
            if model is None:
                raise Skip("the run has no teacher")
            self._cache[key] = self.outputs(model, None, self.data.test_labels)[0]
        return self._cache[key]

    @property
    def test_labels(self) -> torch.Tensor:
        return self.data.test_labels.to(self.device)


Evaluate = Callable[[EvalContext, Any], dict[str, Any]]


@dataclass(frozen=True)
class Score:
    """One headline number of an evaluation's results, with what "better" means and the drop a regression
    gate tolerates by default (``tekapbench check``; a baseline file may set its own)."""

    value: float
    higher_is_better: bool = True
    tolerance: float = 1.0  # absolute, in the score's unit (percentage points for accuracies)


Scores = Callable[[dict[str, Any]], dict[str, Score]]


def no_scores(results: dict[str, Any]) -> dict[str, Score]:
    return {}


@dataclass(frozen=True)
class EvaluationEntry:
    name: str
    evaluate: Evaluate
    params: type[EvalParams]
    version: int = 1  # bumped when what an evaluation measures changes: older stored results then no longer count
    description: str = ""
    scores: Scores = no_scores  # the headline numbers of a stored result, for regression gates


EVALUATIONS: Registry[EvaluationEntry] = Registry("evaluation")


def register_evaluation(name: str, *, params: type[EvalParams] = NoEvalParams, version: int = 1,
                        scores: Scores = no_scores):
    """``@register_evaluation("calibration", params=CalibrationParams, scores=...)`` on
    ``f(ctx, params) -> results``; ``scores(results)`` names the numbers a regression gate compares."""

    def decorator(fn: Evaluate) -> Evaluate:
        doc = (fn.__doc__ or "").strip().splitlines()
        EVALUATIONS.register(name)(EvaluationEntry(name, fn, params, version, doc[0] if doc else "", scores))
        return fn

    return decorator


def evaluation_key(name: str, settings: dict[str, Any]) -> str:
    """Names a stored result by evaluation, its version and settings: other settings are another result."""
    version = EVALUATIONS.get(name).version
    if (code := plugin_code(EVALUATIONS, name)) is not None:  # an edited plugin evaluation is a new result
        version = [version, code]
    digest = hashlib.sha256(json.dumps([version, settings], sort_keys=True).encode()).hexdigest()[:10]
    return f"{name}-{digest}"


def percent(hits: torch.Tensor) -> float:
    """Share of True in %, counted exactly (a float32 mean would print 18.000000715)."""
    return 100.0 * int(hits.sum()) / max(hits.numel(), 1)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return percent(logits.argmax(1) == labels)
