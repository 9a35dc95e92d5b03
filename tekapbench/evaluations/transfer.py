"""Transfer: a linear probe on the frozen pooled features of a trained network.

The set-up is that of CRD's transfer study (Tian et al., ICLR 2020: a linear classifier on the frozen
penultimate features, target images at 32x32), which published no code for it; the probe is tekapbench's
own protocol. The backbone stays in eval mode (BatchNorm statistics cannot drift) and the features of the
target dataset are extracted once. The probe is multinomial logistic regression on standardized features,
fitted full-batch with L-BFGS to convergence: deterministic, no learning rate or epoch count to tune, and
every setting is recorded with the result. Public reproductions instead train a linear layer with SGD for
a fixed number of epochs on unstandardized features; on weak features the two can differ by several points,
so compare transfer numbers only between runs of the same protocol.
"""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field

from tekapbench.data.base import DATASETS
from tekapbench.evaluations.base import EvalContext, EvalParams, Score, Skip, accuracy, register_evaluation


def _known_dataset(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS.names())}")
    return name


class TransferParams(EvalParams):
    dataset: Annotated[str, AfterValidator(_known_dataset)] = "stl10"
    weight_decay: float = Field(1e-4, ge=0, description="L2 penalty on the probe's weights")
    max_iter: int = Field(500, ge=1, description="L-BFGS iterations")

    def required_datasets(self) -> list[str]:
        return [self.dataset]


STD_FLOOR = 1e-4

def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, params: TransferParams
                     ) -> tuple[torch.nn.Linear, dict]:
    """Fits the probe from zero (the problem is convex: no seed to matter); returns it and how the fit went."""
    probe = torch.nn.Linear(train_x.shape[1], num_classes).to(train_x.device)
    torch.nn.init.zeros_(probe.weight)
    torch.nn.init.zeros_(probe.bias)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=params.max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def objective() -> torch.Tensor:
        return F.cross_entropy(probe(train_x), train_y) + 0.5 * params.weight_decay * probe.weight.pow(2).sum()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)  # returns the FIRST evaluation's loss (ln of the class count from zero weights)
    with torch.no_grad():
        final_loss = objective()  # the objective at the fitted probe
    state = optimizer.state[probe.weight]
    return probe.eval(), {"iterations": int(state.get("n_iter", 0)), "function_evaluations": int(state.get("func_evals", 0)),
                          "final_loss": final_loss.item()}


def _scores(results: dict) -> dict[str, Score]:
    return {results["dataset"]: Score(results["accuracy"])}


@register_evaluation("transfer", params=TransferParams, scores=_scores)
def transfer(ctx: EvalContext, params: TransferParams) -> dict:
    """Linear-probe accuracy (%) on another dataset from the frozen pooled features."""
    target = ctx.dataset(params.dataset)
    if not target.in_memory:
        raise Skip(f"the probe's target {params.dataset} is read from image files; targets are datasets held "
                   "in memory (stl10, tinyimagenet, ...)")
    seen = (ctx.test_view.crop_size if ctx.test_view else None) or ctx.data.image_size
    if seen != target.image_size:
        raise Skip(f"the network saw {seen}x{seen} images; {params.dataset} is {target.image_size}x"
                   f"{target.image_size} (the protocol resizes the target to the training size)")
    train_x = ctx.outputs(ctx.model, target.train_images, target.train_labels)[1]
    test_x = ctx.outputs(ctx.model, target.test_images, target.test_labels)[1]
    # standardize with the train split's statistics; features (nearly) constant on it, e.g. dead ReLU
    # channels, carry no information and would be blown up on the test split, so they are dropped
    mean, std = train_x.mean(0), train_x.std(0)
    live = std > STD_FLOOR * std.median().clamp_min(1e-12)
    train_z = (train_x[:, live] - mean[live]) / std[live]
    test_z = (test_x[:, live] - mean[live]) / std[live]
    train_y, test_y = target.train_labels.to(ctx.device), target.test_labels.to(ctx.device)
    probe, fit = fit_linear_probe(train_z, train_y, target.num_classes, params)
    with torch.no_grad():
        train_acc = accuracy(probe(train_z), train_y)
        test_acc = accuracy(probe(test_z), test_y)
    return {
        "dataset": params.dataset, "accuracy": test_acc, "train_accuracy": train_acc,
        "train_images": int(len(train_y)), "test_images": int(len(test_y)), "feature_dim": int(train_x.shape[1]),
        "features_used": int(live.sum()),
        "probe": {"model": "multinomial logistic regression on standardized pooled features, from zero",
                  "solver": "L-BFGS (full batch, strong Wolfe line search)", "lr": 1.0, "history_size": 20,
                  "max_iter": params.max_iter, "tolerance_grad": 1e-6, "tolerance_change": 1e-9,
                  "weight_decay": params.weight_decay, "penalty": "0.5 * weight_decay * |W|^2, bias not penalized",
                  "std_floor": f"features with train std <= {STD_FLOOR} x median std dropped",
                  "backbone": "frozen, eval mode, features extracted once", **fit},
    }
