"""Adversarial robustness under L-inf attacks of torchattacks, over a sweep of budgets.

The attacked model takes [0, 1] images and normalizes inside; it runs in eval mode and fp32. The
examples are a fixed subset of the test set, chosen by ``subset``: ``"random"`` (the default) draws
``num_examples`` images with the evaluation's seed, the same for every model; ``"first"`` takes the
first ``num_examples`` in test-set order, RobustBench's protocol (``num_examples = 10000`` on CIFAR is
the whole test set, a figure comparable with its leaderboard). Every random start is seeded too, so the
numbers repeat. Reported per (attack, eps): robust accuracy (%) on the subset and the attack success
rate (%) on the images the model classified correctly before the attack. Each result row carries the
settings its attack ran with (norm, steps, step size and how it was set, restarts; AutoAttack's suite
and torchattacks version) and the subset protocol, so that tables state what was measured.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torchattacks
from pydantic import Field, model_serializer, model_validator

from tekapbench.evaluations.base import EvalContext, EvalParams, NormalizedLogits, percent, Score, register_evaluation
from tekapbench.registry import Registry
from tekapbench.seeding import derive_seed

AttackName = Literal["fgsm", "pgd", "autoattack"]
SubsetName = Literal["random", "first"]
NORM = "Linf"  # every attack here bounds the L-inf distance

# Settings added after results had been stored, with the default that reproduces those results. At
# their default they are left out of the dumped settings: the settings hash names a stored result
# (evaluations.base.evaluation_key), and an unchanged measurement must keep its name (no re-run, no
# second result of one evaluation that would rename the regression gate's scores).
ADDED_LATER = {"subset": "random"}


class AdversarialParams(EvalParams):
    attacks: list[AttackName] = Field(default_factory=lambda: ["fgsm", "pgd"], min_length=1)
    eps: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0], min_length=1,
                             description="L-inf budgets in units of 1/255")
    pgd_steps: int = Field(10, ge=1)
    pgd_step_size: float | None = Field(None, gt=0, description="in units of 1/255; default eps/4")
    pgd_random_start: bool = True
    autoattack_steps: int = Field(100, ge=1, description="iterations of APGD-CE, APGD-T and FAB-T (the original's 100)")
    num_examples: int = Field(1000, ge=1, description="size of the fixed test subset (at most the test set)")
    subset: SubsetName = Field("random", description=(
        "which test images: 'random', num_examples drawn with the seed (the same for every model); 'first', "
        "the first num_examples in test-set order, RobustBench's protocol (10000 on CIFAR: the whole test set, "
        "comparable with its leaderboard)"))
    batch_size: int = Field(250, ge=1)
    seed: int = Field(0, description="draws the random subset and seeds every random start")

    @model_validator(mode="after")
    def _non_negative_eps(self) -> "AdversarialParams":
        if any(e < 0 for e in self.eps):
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        return self

    @model_serializer(mode="wrap")
    def _omit_later_defaults(self, handler) -> dict:
        """Leaves out settings of ADDED_LATER at their default, so stored results keep their names."""
        return {k: v for k, v in handler(self).items() if k not in ADDED_LATER or v != ADDED_LATER[k]}


# attack name -> (model, eps as a fraction, params, number of classes) -> (torchattacks.Attack, the
# settings it ran with, stored on each result row; ``step_rule`` says how ``step_size_255`` was set:
# "eps", "eps/4" or "fixed")
ATTACKS: Registry = Registry("attack")


@ATTACKS.register("fgsm")
def _fgsm(model, eps: float, params: AdversarialParams, num_classes: int):
    return torchattacks.FGSM(model, eps=eps), {"norm": NORM, "steps": 1, "step_size_255": eps * 255,
                                               "step_rule": "eps", "restarts": 1}


@ATTACKS.register("pgd")
def _pgd(model, eps: float, params: AdversarialParams, num_classes: int):
    fixed = params.pgd_step_size is not None
    step = params.pgd_step_size / 255 if fixed else eps / 4
    attack = torchattacks.PGD(model, eps=eps, alpha=step, steps=params.pgd_steps,
                              random_start=params.pgd_random_start)
    return attack, {"norm": NORM, "steps": params.pgd_steps, "step_size_255": step * 255,
                    "step_rule": "fixed" if fixed else "eps/4", "random_start": params.pgd_random_start,
                    "restarts": 1}


@ATTACKS.register("autoattack")
def _autoattack(model, eps: float, params: AdversarialParams, num_classes: int):
    """AutoAttack 'standard' as the original runs it: APGD-CE, APGD-T, FAB-T at 100 iterations and
    Square at 5,000 queries, one restart each (torchattacks' own AutoAttack uses 10 iterations). The
    targeted attacks take the 9 most likely other classes, as the original does on CIFAR-100 (all of
    them on a dataset with fewer than 10 classes); the seed is always set (None would seed from the clock)."""
    steps, n_classes, seed = params.autoattack_steps, min(10, num_classes), params.seed
    attack = torchattacks.MultiAttack([
        torchattacks.APGD(model, norm=NORM, eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
        torchattacks.APGDT(model, norm=NORM, eps=eps, steps=steps, n_restarts=1, n_classes=n_classes, seed=seed),
        torchattacks.FAB(model, norm=NORM, eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                         n_classes=n_classes, seed=seed),
        torchattacks.Square(model, norm=NORM, eps=eps, n_queries=5000, n_restarts=1, seed=seed),
    ])
    return attack, {"norm": NORM, "version": "standard", "torchattacks": torchattacks.__version__,
                    "components": ["apgd-ce", "apgd-t", "fab-t", "square"], "steps": steps, "square_queries": 5000,
                    "target_classes": n_classes - 1, "restarts": 1}


# subset protocol -> (test set size, num_examples, seed) -> sorted indices of the test images attacked
SUBSETS: Registry = Registry("test subset")


@SUBSETS.register("random")
def _random_subset(num_test: int, num_examples: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(derive_seed(seed, "adversarial-subset"))
    return torch.randperm(num_test, generator=generator)[: min(num_examples, num_test)].sort().values


@SUBSETS.register("first")
def _first_subset(num_test: int, num_examples: int, seed: int) -> torch.Tensor:
    """RobustBench's protocol: the first n test images, in order (the seed then only seeds the attacks)."""
    return torch.arange(min(num_examples, num_test))


def evaluation_subset(num_test: int, num_examples: int, seed: int, subset: SubsetName = "random") -> torch.Tensor:
    """Indices of the fixed test subset (sorted), the same for every model."""
    return SUBSETS.get(subset)(num_test, num_examples, seed)


def attack_rows(model: NormalizedLogits, images: torch.Tensor, labels: torch.Tensor, params: AdversarialParams,
                batch_size: int, num_classes: int) -> tuple[float, list[dict]]:
    """Clean accuracy and one row per (attack, eps) on [0, 1] images.

    An image counts as robust when it is classified correctly both before and after the attack, the
    convention of AutoAttack (which never attacks a misclassified image), applied to every attack.
    """
    with torch.no_grad():
        clean_hits = torch.cat([model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]
                                for i in range(0, len(labels), batch_size)])
    devices = [images.device] if images.device.type == "cuda" else []
    rows = []
    for name in params.attacks:
        for eps_255 in params.eps:
            attack, details = ATTACKS.get(name)(model, eps_255 / 255, params, num_classes)
            hits = []
            with torch.random.fork_rng(devices=devices):  # seed random starts without touching the caller's RNG
                torch.manual_seed(derive_seed(params.seed, name, eps_255))
                for i in range(0, len(labels), batch_size):
                    x, y = images[i:i + batch_size], labels[i:i + batch_size]
                    adversarial = attack(x, y) if eps_255 > 0 else x
                    with torch.no_grad():
                        hits.append(model(adversarial).argmax(1) == y)
            robust = clean_hits & torch.cat(hits)
            correct = int(clean_hits.sum())
            rows.append({"attack": name, "eps_255": eps_255, "robust_acc": percent(robust),
                         "attack_success_rate": 100.0 * (correct - int(robust.sum())) / correct if correct else math.nan,
                         "num_examples": len(labels), "subset": params.subset, "seed": params.seed,
                         "torchattacks": torchattacks.__version__, **details})
    return percent(clean_hits), rows


def _scores(results: dict) -> dict[str, Score]:
    scores = {"clean": Score(results["clean_acc"])}
    scores.update({f"{row['attack']}@{row['eps_255']:g}/255": Score(row["robust_acc"]) for row in results["results"]})
    return scores


@register_evaluation("adversarial", params=AdversarialParams, scores=_scores)
def adversarial(ctx: EvalContext, params: AdversarialParams) -> dict:
    """Robust accuracy and attack success rate under FGSM, PGD and AutoAttack (L-inf eps sweep)."""
    subset = evaluation_subset(len(ctx.data.test_labels), params.num_examples, params.seed, params.subset)
    images = ctx.test_images(subset).to(ctx.device).float() / 255
    labels = ctx.data.test_labels[subset].to(ctx.device)
    model = NormalizedLogits(ctx.model, ctx.data.mean, ctx.data.std).to(ctx.device).eval()
    clean, rows = attack_rows(model, images, labels, params, params.batch_size, ctx.data.num_classes)
    return {"num_examples": len(subset), "subset": params.subset, "seed": params.seed, "clean_acc": clean,
            "results": rows}
