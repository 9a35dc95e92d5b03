"""Transfer: a linear probe on the frozen pooled features of a trained network (CRD's protocol).

The backbone stays in eval mode (BatchNorm statistics cannot drift) and the features of the target
dataset, whose images are 32x32 like the training data, are extracted once. The probe is multinomial
logistic regression on standardized features, fitted full-batch with L-BFGS: deterministic, no learning
rate or epoch count to tune, and every setting is recorded with the result.
"""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field

from tekapbench.data.base import DATASETS, load_dataset
from tekapbench.evaluations.base import EvalContext, EvalParams, accuracy, register_evaluation
from tekapbench.seeding import derive_seed


def _known_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS.names())}")
    return name


class TransferParams(EvalParams):
    dataset: Annotated[str, AfterValidator(_known_dataset)] = "stl10"
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty on the probe's weights")
    max_iter: int = Field(500, ge=1, description="L-BFGS iterations")
    seed: int = 0


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, params: TransferParams
                     ) -> torch.nn.Linear:
    probe = torch.nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(params.seed, "probe-init"))
        probe.reset_parameters()
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=params.max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(probe(train_x), train_y) + 0.5 * params.weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe.eval()


@register_evaluation("transfer", params=TransferParams)
def transfer(ctx: EvalContext, params: TransferParams) -> dict:
    """Linear-probe accuracy (%) on another dataset from the frozen pooled features."""
    target = load_dataset(params.dataset, ctx.data_options)
    train_x = ctx.outputs(ctx.model, target.train_images, target.train_labels)[1]
    test_x = ctx.outputs(ctx.model, target.test_images, target.test_labels)[1]
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_y, test_y = target.train_labels.to(ctx.device), target.test_labels.to(ctx.device)
    probe = fit_linear_probe((train_x - mean) / std, train_y, target.num_classes, params)
    with torch.no_grad():
        train_acc = accuracy(probe((train_x - mean) / std), train_y)
        test_acc = accuracy(probe((test_x - mean) / std), test_y)
    return {
        "dataset": params.dataset, "accuracy": test_acc, "train_accuracy": train_acc,
        "train_images": int(len(train_y)), "test_images": int(len(test_y)), "feature_dim": int(train_x.shape[1]),
        "probe": {"model": "multinomial logistic regression on standardized pooled features",
                  "solver": "L-BFGS (full batch, strong Wolfe line search)", "max_iter": params.max_iter,
                  "weight_decay": params.weight_decay, "backbone": "frozen, eval mode, features extracted once"},
    }
