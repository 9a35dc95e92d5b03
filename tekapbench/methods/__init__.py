"""Distillation methods: one file per method, each registered in METHODS."""
from tekapbench.methods import crd, dkd, fitnet, kd, vanilla  # noqa: F401  (registration)
from tekapbench.methods.base import METHODS, DistillContext, FeatureShapes, LossTerm, MethodParams, register_method
from tekapbench.methods.objective import MethodSpec, Objective, TermSpec

__all__ = ["METHODS", "DistillContext", "FeatureShapes", "LossTerm", "MethodParams", "MethodSpec", "Objective",
           "TermSpec", "register_method"]
