"""Common corruptions: accuracy under 15 corruptions x 5 severities (Hendrycks & Dietterich, 2019).

``source = "files"`` reads CIFAR-100-C (the CIFAR-100 test set, corrupted, as .npy files) for a model
trained on CIFAR-100; ``source = "generated"`` applies the noise and contrast corruptions of the same paper
(its CIFAR parameters, seeded) to any test set, e.g. the embedded digits of the CPU suites.
Reported: accuracy per corruption and severity, mean per corruption, and the mean over all of them.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import Field, model_validator

from tekapbench.data.cifar100c import CORRUPTIONS, available_corruptions, load_cifar100c
from tekapbench.data._files import CorruptDataError
from tekapbench.errors import DataNotFoundError
from tekapbench.evaluations.base import EvalContext, EvalParams, Skip, accuracy, Score, register_evaluation
from tekapbench.registry import Registry
from tekapbench.seeding import derive_seed

Corrupt = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]  # [0,1] images, severity -> images
GENERATED: Registry[Corrupt] = Registry("generated corruption")


@GENERATED.register("gaussian_noise")
def _gaussian_noise(x, severity, generator):
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    return x + c * torch.randn(x.shape, generator=generator, device=x.device)


@GENERATED.register("shot_noise")
def _shot_noise(x, severity, generator):
    c = (500, 250, 100, 75, 50)[severity - 1]
    return torch.poisson(x * c, generator=generator) / c


@GENERATED.register("impulse_noise")
def _impulse_noise(x, severity, generator):
    amount = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    u = torch.rand(x.shape, generator=generator, device=x.device)
    x = torch.where(u < amount / 2, torch.zeros_like(x), x)  # pepper
    return torch.where(u > 1 - amount / 2, torch.ones_like(x), x)  # salt


@GENERATED.register("contrast")
def _contrast(x, severity, generator):
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    means = x.mean(dim=(2, 3), keepdim=True)  # per image and channel, as np.mean(x, axis=(0, 1)) on HWC
    return (x - means) * c + means


class CorruptionParams(EvalParams):
    source: Literal["files", "generated"] = "files"
    corruptions: list[str] | None = Field(None, description="default: all of the source")
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    seed: int = Field(0, description="seed of the generated corruptions")

    @model_validator(mode="after")
    def _known(self) -> "CorruptionParams":
        if any(s not in range(1, 6) for s in self.severities):
            raise ValueError(f"severities must lie in 1..5, got {self.severities}")
        known = CORRUPTIONS if self.source == "files" else GENERATED.names()
        unknown = [c for c in self.corruptions or [] if c not in known]
        if unknown:
            raise ValueError(f"unknown {self.source} corruption(s) {unknown}; allowed: {', '.join(known)}")
        return self


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _scores(results: dict) -> dict[str, Score]:
    return {f"mean ({results['source']})": Score(results["mean_corruption_accuracy"])}


@register_evaluation("corruptions", params=CorruptionParams, scores=_scores)
def corruptions(ctx: EvalContext, params: CorruptionParams) -> dict:
    """Mean accuracy (%) over corruptions x severities, and per corruption and severity."""
    if params.source == "files":
        if not ctx.data.name.startswith("cifar100") or ctx.data.num_classes != 100:
            raise Skip(f"CIFAR-100-C corrupts the CIFAR-100 test set; this run is on {ctx.data.name} "
                       "(use source = \"generated\")")
        root = Path(ctx.data_options.root)
        names = params.corruptions or list(CORRUPTIONS)  # the 15 of the protocol; extras only when named
        present = set(available_corruptions(root))
        absent = [c for c in names if c not in present]
        if absent:
            if len(absent) == len(names):
                load_cifar100c(root, names[0], 1)  # raises the clear "where to get it" error
            raise DataNotFoundError(f"CIFAR-100-C under {root}: {', '.join(absent)} missing; the mean needs all of "
                                    f"{', '.join(names)}")

        def corrupted(name: str, severity: int):
            images, labels = load_cifar100c(root, name, severity)
            if len(labels) == len(ctx.data.test_labels) and not torch.equal(labels, ctx.data.test_labels):
                raise CorruptDataError(f"CIFAR-100-C {name}: its labels are not those of the CIFAR-100 test set in "
                                       f"order; the files do not belong to this test set")
            return images, labels
    else:
        if not ctx.data.in_memory:
            raise Skip(f"generated corruptions perturb a test set held in memory; {ctx.data.name} is streamed "
                       "from image files")
        names = params.corruptions or GENERATED.names()
        clean = ctx.data.test_images.float() / 255

        def corrupted(name: str, severity: int):
            generator = torch.Generator().manual_seed(derive_seed(params.seed, name, severity))
            return _uint8(GENERATED.get(name)(clean, severity, generator)), ctx.data.test_labels

    table: dict[str, dict[str, float]] = {}
    for name in names:
        table[name] = {}
        for severity in params.severities:
            images, labels = corrupted(name, severity)
            logits = ctx.outputs(ctx.model, images, labels)[0]
            table[name][str(severity)] = accuracy(logits, labels.to(ctx.device))
    per_corruption = {name: statistics.fmean(row.values()) for name, row in table.items()}
    return {
        "source": params.source,
        "corruptions": names,
        "mean_corruption_accuracy": statistics.fmean(per_corruption.values()),
        "clean_accuracy": accuracy(ctx.test_logits(), ctx.test_labels),
        "per_corruption": per_corruption,
        "per_severity": table,
    }
