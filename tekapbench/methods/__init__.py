"""Distillation methods: one file per method, each registered in METHODS."""
from tekapbench.methods.base import METHODS, DistillContext, FeatureShapes, LossTerm, MethodParams, register_method
from tekapbench.registry import import_submodules

import_submodules(__name__)  # each method file registers itself

__all__ = ["METHODS", "DistillContext", "FeatureShapes", "LossTerm", "MethodParams", "register_method"]
