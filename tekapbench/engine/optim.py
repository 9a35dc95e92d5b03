"""Optimizers and learning-rate schedules, by name: a recipe names them, the trainer builds them.

Adding one is a function here plus its registry line; a recipe (engine/recipes.toml, a method's official
recipe, or a suite's [recipe]) selects it with ``optimizer = "..."`` / ``schedule = "..."``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Iterable

import torch

from tekapbench.registry import Registry

if TYPE_CHECKING:
    from tekapbench.engine.recipe import Recipe

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter], "Recipe"], torch.optim.Optimizer]
Schedule = Callable[["Recipe", int], float]  # (recipe, epoch counted from 1) -> factor of recipe.lr

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULES: Registry[Schedule] = Registry("schedule")


@OPTIMIZERS.register("sgd")
def sgd(params, recipe: "Recipe") -> torch.optim.Optimizer:
    """SGD with momentum (Nesterov's when the recipe says so) and coupled weight decay.

    As every CIFAR distillation code base trains."""
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                           nesterov=recipe.nesterov)


@SCHEDULES.register("step")
def step(recipe: "Recipe", epoch: int) -> float:
    """x ``lr_decay`` after each milestone epoch (CRD, DKD, MLKD, CA-MKD, ...)."""
    return recipe.lr_decay ** sum(epoch > m for m in recipe.milestones)


@SCHEDULES.register("cosine")
def cosine(recipe: "Recipe", epoch: int) -> float:
    """Cosine annealing from lr to 0 over the epochs, one value per epoch."""
    return 0.5 * (1 + math.cos(math.pi * (epoch - 1) / recipe.epochs))
